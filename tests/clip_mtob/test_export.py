"""The converted clip-mtob layout (BERT text tower with TokenLayerNorm, CLIP ViT with K class tokens, torchvision
preprocessing, behind a ModalityRouter) exports to ONNX and OpenVINO and still equals the paper's official code."""

from __future__ import annotations

import pytest
from clip_mtob.oracle import TRICKY_TEXTS, max_diff, official_embeddings

import st_oblique

pytestmark = [pytest.mark.shared, pytest.mark.slow]

TOLERANCE = 1e-4
"""The exported graphs against the official code: float32 graphs of a traced model (the torch model itself is within
1e-5 of it, see test_parity.py)."""


@pytest.fixture(scope="module")
def exported(converted, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip_mtob_export") / "mtob"
    st_oblique.export(st_oblique.load(str(converted["mtob"]), device="cpu"), folder, format=["onnx", "openvino"])
    return folder


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_exported_clip_mtob_equals_the_official_code(backend, exported, official, official_models, photos):
    model = st_oblique.load(str(exported), backend=backend)
    assert model[0].modalities_config["image"]["preprocessing"]["kind"] == "torchvision"
    for inputs, kind in ((TRICKY_TEXTS, "texts"), (photos, "images")):
        expected = official_embeddings(official_models["mtob"], official, **{kind: inputs})
        actual = model.encode(inputs, convert_to_tensor=True, batch_size=3).reshape(expected.shape)
        assert max_diff(f"exported {backend} {kind}", actual, expected) <= TOLERANCE
