"""st_oblique.export: every tower family, exported to ONNX and OpenVINO, loaded with ``backend=``, equals torch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from export.export_models import (
    FAMILIES,
    LATE_FAMILIES,
    LONG_TEXT,
    SHORT_TEXT,
    D,
    K,
    image_inputs,
    oblique,
    text_inputs,
)
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer

import st_oblique
from st_oblique import manifold
from st_oblique.errors import ObliqueLoadError
from st_oblique.modules.exported_inputs import ExportedTextInputs, tokenizer_input_names
from st_oblique.modules.exported_oblique_encoder import ExportedObliqueEncoder
from st_oblique.modules.graph_runtimes import BACKENDS
from st_oblique.modules.shape import oblique_poolings

TOLERANCE = 1e-4
"""Largest difference per coordinate between a float32 graph and the torch model (the issue's target)."""

pytestmark = pytest.mark.slow  # each family's export traces its graphs once (seconds per graph)


def inputs_of(modality: str) -> list:
    return text_inputs() if modality == "text" else image_inputs()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(FAMILIES))
def test_exported_family_equals_torch(name, backend, family_model, exported_family):
    model, folder = family_model(name), exported_family(name)
    loaded = st_oblique.load(str(folder), backend=backend)
    assert isinstance(loaded[0], ExportedObliqueEncoder) and loaded[0].backend == backend
    assert loaded.similarity_fn_name == "dot" and loaded.modalities == model.modalities
    for modality in model.modalities:
        inputs = inputs_of(modality)
        expected = oblique(model, inputs)
        for batch_size in (1, 3, 64):  # one input, odd batches (padding), everything at once
            actual = oblique(loaded, inputs, batch_size=batch_size)
            assert actual.shape == (len(inputs), K * D)
            difference = float((actual - expected).abs().max())
            assert difference <= TOLERANCE, f"{name} {backend} {modality} batch {batch_size}: {difference:.2e}"
        assert manifold.is_on_manifold(actual, num_tokens=K)
        # truncate_dim keeps whole tokens, never renormalized, and refuses a cut inside a token
        kept = oblique(loaded, inputs[:3], truncate_dim=2 * D)
        torch.testing.assert_close(kept, expected[:3, : 2 * D], atol=TOLERANCE, rtol=0)
        with pytest.raises(ValueError, match=r"token"):
            loaded.encode(inputs[:1], truncate_dim=D + 1)


def test_texts_of_3_and_200_tokens_share_one_graph(family_model, exported_family):
    model, folder = family_model("bert"), exported_family("bert")
    loaded = st_oblique.load(str(folder), backend="onnx")
    lengths = [loaded.preprocess([text])["input_ids"].shape[1] for text in (SHORT_TEXT, LONG_TEXT)]
    assert lengths == [3 + 2 + K - 1, 204 + 2 + K - 1]  # words + [CLS]/[SEP] + the K−1 class tokens
    runner = loaded[0]._runner("text")
    for text in (SHORT_TEXT, LONG_TEXT):
        torch.testing.assert_close(oblique(loaded, [text]), oblique(model, [text]), atol=TOLERANCE, rtol=0)
    assert loaded[0]._runner("text") is runner  # the same session served both lengths
    graph = loaded[0].graph_infos["text"]
    assert graph.output_shape == [None, K, D]


@pytest.mark.parametrize("name", ["timm_vit_dual_late", "hf_clip_late"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_late_class_tokens_take_any_length_and_batch(name, backend, family_model, exported_family):
    """Late class tokens add no positions to the tower: a 3-word and a 200-word text (or the longest the tower takes)
    and batches of 1 and 2 go through one graph with dynamic batch and sequence axes."""
    model, folder = family_model(name), exported_family(name)
    loaded = st_oblique.load(str(folder), backend=backend)
    assert loaded[0].modalities_config["text"]["token_source"] == "class_attention"
    texts = [SHORT_TEXT, LONG_TEXT]
    lengths = [loaded.preprocess([text])["input_ids"].shape[1] for text in texts]
    torch_lengths = [model.preprocess([text])["input_ids"].shape[1] for text in texts]
    assert lengths == torch_lengths and lengths[0] < 10 < lengths[1]  # [CLS]/[SEP] or BOS/EOS only, no class tokens
    runner = loaded[0]._runner("text")
    for batch in ([SHORT_TEXT], [LONG_TEXT], texts):
        torch.testing.assert_close(oblique(loaded, batch), oblique(model, batch), atol=TOLERANCE, rtol=0)
    assert loaded[0]._runner("text") is runner  # one session served every length and batch size
    for modality, graph in loaded[0].graph_infos.items():
        assert graph.output_shape == [None, K, D] and graph.metadata["token_source"] == "class_attention", modality


def test_late_class_tokens_are_described_as_in_torch(family_model, exported_family):
    model, folder = family_model("cnn_dual_late"), exported_family("cnn_dual_late")
    loaded = st_oblique.load(str(folder), backend="onnx")
    assert {tower.modality: tower.token_source for tower in st_oblique.describe_model(loaded).towers} == {
        "text": "attention", "image": "class_attention"
    }
    exported, original = loaded[0].exported_pooling.heads["image"], oblique_poolings(model)[0].heads["image"]
    assert exported.class_attention.width == original.class_attention.width
    assert len(exported.class_attention.blocks) == len(original.class_attention.blocks)
    assert LATE_FAMILIES and all(name in FAMILIES for name in LATE_FAMILIES)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_sentence_transformers_loads_it(backend, family_model, exported_family):
    model, folder = family_model("hf_clip"), exported_family("hf_clip")
    plain = SentenceTransformer(str(folder), backend=backend, trust_remote_code=True)
    for modality in ("text", "image"):
        inputs = inputs_of(modality)
        assert np.abs(plain.encode(inputs) - oblique(model, inputs).numpy()).max() <= TOLERANCE
    assert plain.similarity_fn_name == "dot"


def test_the_folder_describes_itself(family_model, exported_family):
    model, folder = family_model("timm_vit_dual"), exported_family("timm_vit_dual")
    loaded = st_oblique.load(str(folder), backend="openvino")
    description = st_oblique.describe_model(loaded)
    original = st_oblique.describe_model(model)
    assert (description.num_tokens, description.token_dim) == (K, D)
    assert {tower.modality: tower.token_source for tower in description.towers} == {
        tower.modality: tower.token_source for tower in original.towers
    }
    assert {tower.class_token_placement for tower in description.towers} == {
        tower.class_token_placement for tower in original.towers
    }
    config = json.loads((folder / "oblique_export_config.json").read_text())
    assert set(config["graphs"]) == {"onnx", "openvino"} and config["default_variant"] == "fp32"
    for key, report in config["verification"].items():
        assert key.endswith("/fp32")
        assert all(entry["max_abs_diff"] <= TOLERANCE for entry in report.values())
    card = (folder / "README.md").read_text()
    assert 'backend="onnx"' in card and "oblique" in card.lower()
    # a folder loaded with one backend saves the same export, and the copy loads with the other
    copy = folder.parent / "resaved"
    loaded.save(str(copy))
    again = st_oblique.load(str(copy), backend="onnx")
    images = image_inputs()
    torch.testing.assert_close(oblique(again, images), oblique(model, images), atol=TOLERANCE, rtol=0)


def test_variant_and_runtime_options(family_model, exported_family):
    model, folder = family_model("bert"), exported_family("bert")
    texts = text_inputs()
    for file_name in ("onnx/model_text.onnx", "model_text.onnx"):
        chosen = st_oblique.load(str(folder), backend="onnx", model_kwargs={"file_name": file_name})
        assert chosen[0].variant == "fp32"
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    one_thread = st_oblique.load(str(folder), backend="onnx", model_kwargs={"session_options": options})
    openvino = st_oblique.load(str(folder), backend="openvino", model_kwargs={"ov_config": {"INFERENCE_NUM_THREADS": 1}})
    for loaded in (one_thread, openvino):
        torch.testing.assert_close(oblique(loaded, texts), oblique(model, texts), atol=TOLERANCE, rtol=0)
    # Sentence Transformers' default backend ("torch") runs the graphs the folder has
    default = st_oblique.load(str(folder))
    assert default[0].backend == "onnx"


def retyped_tokenizer_copy(folder, target):
    """A copy of an exported folder whose saved tokenizer says ``"tokenizer_class": "TokenizersBackend"``: what
    transformers 5.0's AutoTokenizer loads a BERT tokenizer as when the folder's path names another model type
    (``.../timm_vit_dual/text_preprocessing`` reads as a ViT). The generic class makes no ``token_type_ids``."""
    shutil.copytree(folder, target)
    config_file = target / "text_preprocessing" / "tokenizer_config.json"
    settings = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**settings, "tokenizer_class": "TokenizersBackend"}))
    return target


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_tokenizer_makes_the_inputs_the_graph_was_traced_with(backend, family_model, exported_family, tmp_path):
    model, folder = family_model("bert"), exported_family("bert")
    copy = retyped_tokenizer_copy(folder, tmp_path / "retyped")
    # what made the exported model fail on transformers 5.0: a graph traced with token_type_ids, a tokenizer without
    assert "token_type_ids" in st_oblique.load(str(folder), backend=backend)[0].graph_infos["text"].input_names
    assert "token_type_ids" not in AutoTokenizer.from_pretrained(str(copy / "text_preprocessing")).model_input_names
    loaded = st_oblique.load(str(copy), backend=backend)
    texts = text_inputs()
    torch.testing.assert_close(oblique(loaded, texts), oblique(model, texts), atol=TOLERANCE, rtol=0)
    # features made elsewhere, without an input the graph takes: the error names it
    features = loaded[0].preprocess(texts[:2])
    del features["token_type_ids"]
    with pytest.raises(ValueError, match=r"lack \['token_type_ids'\].*preprocess\(\)"):
        loaded[0](features)


def test_the_tokenizer_is_asked_for_the_graph_inputs_only(exported_family, tmp_path):
    folder = exported_family("bert")
    spec = json.loads((folder / "oblique_export_config.json").read_text())["modalities"]["text"]["preprocessing"]
    copy = retyped_tokenizer_copy(folder, tmp_path / "retyped")
    with_types = ["input_ids", "token_type_ids", "attention_mask"]
    assert tokenizer_input_names(with_types) == with_types
    assert tokenizer_input_names(["attention_mask", "input_ids"]) == ["input_ids", "attention_mask"]
    for source in (folder, copy):  # whichever class transformers rebuilds the tokenizer as
        assert "token_type_ids" in ExportedTextInputs(source, spec, input_names=with_types)(["a dog runs"])
        # a graph traced without token_type_ids (a tokenizer that made none) is not given them
        assert "token_type_ids" not in ExportedTextInputs(source, spec, input_names=["input_ids", "attention_mask"])(
            ["a dog runs"]
        )
    with pytest.raises(ObliqueLoadError, match=r"nothing can make \['position_ids'\]"):
        ExportedTextInputs(folder, spec, input_names=["input_ids", "position_ids", "attention_mask"])
