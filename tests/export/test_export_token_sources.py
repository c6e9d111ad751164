"""Every token source of ObliquePooling (``TOKEN_SOURCES``, so a new source is covered when it is added) exports and
reproduces the torch model: the export traces the real forward pass, nothing source-specific is re-implemented."""

from __future__ import annotations

import pytest
from export.export_models import D, K, oblique, text_inputs

import st_oblique
from st_oblique.modules.graph_runtimes import BACKENDS
from st_oblique.modules.pooling import TOKEN_SOURCES

pytestmark = pytest.mark.slow

FAMILY_OF_SOURCE = {"first": "bert", "last": "hf_clip"}
"""Sources the family tests already export ("last": class positions after a causal caption, HF CLIP's text tower)."""


def model_with_source(source, family_model, family_dirs):
    if source in FAMILY_OF_SOURCE:
        return family_model(FAMILY_OF_SOURCE[source])
    return st_oblique.oblique_text_model(family_dirs["bert"], num_tokens=K, token_dim=D, token_source=source, device="cpu")


@pytest.mark.parametrize("source", TOKEN_SOURCES)
def test_every_token_source_exports(source, family_model, family_dirs, exported_family, tmp_path):
    model = model_with_source(source, family_model, family_dirs).eval()
    if source in FAMILY_OF_SOURCE:
        folder = exported_family(FAMILY_OF_SOURCE[source])
    else:
        folder = tmp_path / source
        st_oblique.export(model, folder, format=["onnx", "openvino"])
    texts = text_inputs()
    expected = oblique(model, texts)
    for backend in BACKENDS:
        loaded = st_oblique.load(str(folder), backend=backend)
        assert loaded[0].modalities_config["text"]["token_source"] == source
        heads = loaded[0].exported_pooling.heads
        assert heads["text" if "text" in heads else "default"].token_source == source
        for batch_size in (1, 5):
            difference = float((oblique(loaded, texts, batch_size=batch_size) - expected).abs().max())
            assert difference <= 1e-4, f"{source} {backend}: {difference:.2e}"
