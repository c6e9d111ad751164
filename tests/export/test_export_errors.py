"""Bad inputs of st_oblique.export and of loading exported folders: clear errors, nothing half-written."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from export.export_models import D, K, oblique, text_inputs
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Router
from sentence_transformers.sentence_transformer.modules import Pooling, StaticEmbedding, Transformer
from tiny_models import SENTENCES, tiny_images

import st_oblique
from st_oblique import ObliquePooling
from st_oblique.errors import ExportError, MissingExtraError, ObliqueInputError, ObliqueLoadError
from st_oblique.export import exporter


def assert_nothing_written(target) -> None:
    assert not target.exists()
    leftovers = [path.name for path in target.parent.iterdir() if path.name.startswith(f".{target.name}.")]
    assert leftovers == [], leftovers


def test_a_model_that_is_not_oblique(tiny_bert_dir, tmp_path):
    plain = SentenceTransformer(modules=[Transformer(tiny_bert_dir), Pooling(32)], device="cpu")
    with pytest.raises(ValueError, match=r"st_oblique.export needs an oblique model"):
        st_oblique.export(plain, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_an_unsupported_input_module_is_named_with_the_supported_ones(tiny_bert_dir, tmp_path):
    tokenizer = Transformer(tiny_bert_dir).tokenizer.backend_tokenizer
    static = StaticEmbedding(tokenizer, embedding_dim=16)
    model = st_oblique.ObliqueSentenceTransformer(
        modules=[static, ObliquePooling(16, num_tokens=K, token_dim=D, token_source="split")], device="cpu"
    )
    with pytest.raises(ObliqueInputError) as error:
        st_oblique.export(model, tmp_path / "out")
    message = str(error.value)
    assert "StaticEmbedding" in message and "ClassTokenTransformer" in message and "OpenCLIPEncoder" in message
    assert "onnx" in message and "openvino" in message
    assert_nothing_written(tmp_path / "out")


def test_a_router_by_task_is_refused(tiny_bert_dir, tmp_path):
    query, document = Transformer(tiny_bert_dir), Transformer(tiny_bert_dir)
    router = Router.for_query_document(query_modules=[query], document_modules=[document])
    model = st_oblique.ObliqueSentenceTransformer(
        modules=[router, ObliquePooling(32, num_tokens=K, token_dim=D, token_source="attention")], device="cpu"
    )
    with pytest.raises(ObliqueInputError, match=r"Router by task"):
        st_oblique.export(model, tmp_path / "out")


def test_unknown_format_and_quantization(family_model, tmp_path):
    model = family_model("bert")
    with pytest.raises(ObliqueInputError, match=r"onnx and openvino"):
        st_oblique.export(model, tmp_path / "out", format="tensorrt")
    with pytest.raises(ObliqueInputError, match=r"quantize='int4'"):
        st_oblique.export(model, tmp_path / "out", quantize="int4")
    assert_nothing_written(tmp_path / "out")


def test_openvino_int8_needs_calibration_data(family_model, tmp_path):
    with pytest.raises(ObliqueInputError, match=r"calibration") as error:
        st_oblique.export(family_model("timm_vit_dual"), tmp_path / "out", format="openvino", quantize="int8",
                          calibration=SENTENCES)  # texts only: the image graph has none
    assert "image graph" in str(error.value) and "ONNX int8 (dynamic) needs none" in str(error.value)
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("package", ["onnxruntime", "openvino"])
def test_missing_packages_give_the_pip_line(package, family_model, exported_family, tmp_path, monkeypatch):
    folder = exported_family("bert")
    monkeypatch.setitem(sys.modules, package, None)  # what an uninstalled package looks like to `import`
    backend = "onnx" if package == "onnxruntime" else "openvino"
    with pytest.raises(MissingExtraError, match=r'pip install "st-oblique\[export\]"') as error:
        st_oblique.load(str(folder), backend=backend)
    assert package in str(error.value)
    with pytest.raises(MissingExtraError, match=r'pip install "st-oblique\[export\]"'):
        st_oblique.export(family_model("bert"), tmp_path / "out", format=backend)
    assert_nothing_written(tmp_path / "out")


def test_a_failure_midway_leaves_nothing(family_model, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise ExportError("OpenVINO cannot convert this graph (simulated)")

    monkeypatch.setattr(exporter, "onnx_to_openvino", fail)
    target = tmp_path / "out"
    with pytest.raises(ExportError, match=r"simulated"):
        st_oblique.export(family_model("bert"), target, format=["onnx", "openvino"])
    assert_nothing_written(target)


def test_graphs_that_do_not_reproduce_the_model_are_not_written(family_model, tmp_path):
    target = tmp_path / "out"
    with pytest.raises(ExportError, match=r"does not reproduce the torch model"):
        st_oblique.export(family_model("bert"), target, tolerance=-1.0)  # no graph can meet a negative bound
    assert_nothing_written(target)


def edited_copy(folder, tmp_path, edit) -> str:
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    path = copy / "oblique_export_config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    return str(copy)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda config: config.update(num_tokens=2 * K), "output has shape"),
        (lambda config: config.update(token_dim=D + 1), "output has shape"),
        (lambda config: config["modalities"]["text"].update(token_source="attention"), "token_source is 'first'"),
        (lambda config: config.update(opset=17), "opset is '20'"),
    ],
)
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_a_graph_that_does_not_match_its_config_is_refused(edit, reason, backend, exported_family, tmp_path):
    folder = edited_copy(exported_family("bert"), tmp_path, edit)
    with pytest.raises(ObliqueLoadError, match=reason) as error:
        st_oblique.load(folder, backend=backend)
    assert "does not match" in str(error.value) and "export the model again" in str(error.value)


@pytest.mark.parametrize(
    ("family", "modality", "claimed", "recorded"),
    [
        ("timm_vit_dual_late", "text", "first", "class_attention"),  # late class tokens claimed as tokens at the input
        ("timm_vit_dual_late", "image", "attention", "class_attention"),
        ("timm_vit_dual", "image", "class_attention", "first"),  # and the other way round
    ],
)
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_a_graph_of_another_token_source_is_refused(family, modality, claimed, recorded, backend, exported_family,
                                                    tmp_path):
    folder = edited_copy(exported_family(family), tmp_path, lambda config: config["modalities"][modality].update(
        token_source=claimed))
    with pytest.raises(ObliqueLoadError, match=f"token_source is '{recorded}', the config says '{claimed}'") as error:
        st_oblique.load(folder, backend=backend)
    assert f"model_{modality}" in str(error.value) and "export the model again" in str(error.value)


def test_swapped_graph_files_are_refused(exported_family, tmp_path):
    copy = tmp_path / "swapped"
    shutil.copytree(exported_family("hf_clip"), copy)
    for suffix in ("", ".data"):
        shutil.copy(copy / f"onnx/model_image.onnx{suffix}", copy / f"onnx/model_text.onnx{suffix}")
    with pytest.raises(ObliqueLoadError, match=r"its modality is 'image', the config says 'text'"):
        st_oblique.load(str(copy), backend="onnx")


def test_missing_format_variant_and_options(exported_family, family_model, tmp_path):
    folder = str(exported_family("bert"))
    onnx_only = tmp_path / "onnx-only"
    shutil.copytree(folder, onnx_only)
    shutil.rmtree(onnx_only / "openvino")
    edited = json.loads((onnx_only / "oblique_export_config.json").read_text())
    edited["graphs"].pop("openvino")
    (onnx_only / "oblique_export_config.json").write_text(json.dumps(edited))
    with pytest.raises(ObliqueLoadError, match=r"has no OpenVINO graphs.*backend='onnx'"):
        st_oblique.load(str(onnx_only), backend="openvino")
    with pytest.raises(ObliqueLoadError, match=r"is not one of the ONNX graphs.*model_text.onnx"):
        st_oblique.load(folder, backend="onnx", model_kwargs={"file_name": "onnx/model_text_qint8.onnx"})
    with pytest.raises(ObliqueLoadError, match=r"belongs to another backend"):
        st_oblique.load(folder, backend="onnx", model_kwargs={"file_name": "openvino/openvino_model_text.xml"})
    with pytest.raises(ValueError, match=r"ov_config.*takes"):
        st_oblique.load(folder, backend="onnx", model_kwargs={"ov_config": {}})
    missing = tmp_path / "missing-graph"
    shutil.copytree(folder, missing)
    (missing / "onnx" / "model_text.onnx").unlink()
    with pytest.raises(ObliqueLoadError, match=r"model_text.onnx is missing"):
        st_oblique.load(str(missing), backend="onnx")
    # the intact folder still loads and reproduces the model
    model = family_model("bert")
    loaded = st_oblique.load(folder, backend="onnx")
    assert float((oblique(loaded, text_inputs()) - oblique(model, text_inputs())).abs().max()) <= 1e-4


def test_an_existing_output_folder_is_kept(family_model, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(st_oblique.OutputDirError, match=r"exists and is not empty"):
        st_oblique.export(family_model("bert"), target)
    assert (target / "keep.txt").read_text() == "mine"


def test_calibration_inputs_that_cannot_be_used(family_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    model = family_model("bert")
    for calibration, reason in (
        (empty, "holds no images"),
        ("no-such-dataset", "neither a file"),
        (["a caption", *tiny_images(1)], "mixes texts and images"),
        ({"audio": ["x"]}, "use 'text' and 'image'"),
    ):
        with pytest.raises(ObliqueInputError, match=reason):
            st_oblique.export(model, tmp_path / "out", calibration=calibration)
    assert_nothing_written(tmp_path / "out")
