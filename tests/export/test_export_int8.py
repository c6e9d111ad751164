"""int8 variants: ONNX Runtime's dynamic quantization and OpenVINO's static (NNCF) quantization, text and image graphs,
with K class tokens at the towers' input and with late class tokens (class-attention blocks in the heads).

Stated tolerance (tiny random towers, 48 calibration inputs): every int8 embedding token keeps a cosine of at least
0.9 with the torch model's (the mean over tokens at least 0.98), and the graphs really hold int8 arithmetic.
Retention of retrieval and STS quality on real models is measured by evaluation/benchmarks/export_speed.py.
"""

from __future__ import annotations

import json
from collections import Counter

import onnx
import openvino
import pytest
import torch
from export.export_models import K, image_inputs, oblique, text_inputs
from tiny_models import SENTENCES, tiny_images

import st_oblique
from st_oblique.modules.graph_runtimes import BACKENDS

MIN_TOKEN_COSINE = 0.9
MIN_MEAN_TOKEN_COSINE = 0.98

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["timm_vit_dual", "timm_vit_dual_late"])
def quantized_family(request, family_model, tmp_path_factory):
    """``(family, folder)``: the timm-ViT dual encoder, with K class tokens at the towers' input and with late class
    tokens (class-attention blocks in both heads), exported to both formats with int8 variants (OpenVINO calibrated
    on 48 inputs)."""
    folder = tmp_path_factory.mktemp("int8") / request.param
    calibration = {"text": SENTENCES * 6, "image": tiny_images(48, seed=3)}
    st_oblique.export(family_model(request.param), folder, format=["onnx", "openvino"], quantize="int8",
                      calibration=calibration)
    return request.param, folder


@pytest.fixture
def quantized(quantized_family):
    return quantized_family[1]


def token_cosines(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(actual.reshape(len(actual), K, -1), expected.reshape(len(expected), K, -1), dim=-1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8_is_the_default_and_close_to_torch(backend, quantized_family, family_model):
    name, quantized = quantized_family
    model = family_model(name)
    loaded = st_oblique.load(str(quantized), backend=backend)
    assert loaded[0].variant == "qint8"
    for inputs in (text_inputs(), image_inputs()):
        expected = oblique(model, inputs)
        for batch_size in (1, 4):
            cosines = token_cosines(oblique(loaded, inputs, batch_size=batch_size), expected)
            assert float(cosines.min()) >= MIN_TOKEN_COSINE and float(cosines.mean()) >= MIN_MEAN_TOKEN_COSINE
        # int8 is not float32: a real difference, else the quantized graph would not be in use
        assert float((oblique(loaded, inputs) - expected).abs().max()) > 1e-4
    # the float32 graphs of the same folder are still exact
    exact = st_oblique.load(str(quantized), backend=backend, model_kwargs={
        "file_name": "onnx/model_text.onnx" if backend == "onnx" else "openvino/openvino_model_text.xml"})
    assert exact[0].variant == "fp32"
    texts = text_inputs()
    assert float((oblique(exact, texts) - oblique(model, texts)).abs().max()) <= 1e-4


def test_the_graphs_hold_int8_arithmetic(quantized):
    for modality in ("text", "image"):
        graph = onnx.load(str(quantized / f"onnx/model_{modality}_qint8.onnx"), load_external_data=False)
        operators = Counter(node.op_type for node in graph.graph.node)
        assert operators["DynamicQuantizeLinear"] + operators["MatMulInteger"] > 0, operators
        model = openvino.Core().read_model(str(quantized / f"openvino/openvino_model_{modality}_qint8.xml"))
        kinds = Counter(operation.get_type_name() for operation in model.get_ops())
        assert kinds["FakeQuantize"] > 0, kinds
        weights = {str(operation.get_element_type()) for operation in model.get_ops() if operation.get_type_name() == "Constant"}
        assert weights & {"<Type: 'int8_t'>", "<Type: 'uint8_t'>"}, weights
    assert (quantized / "onnx/model_text_qint8.onnx.data").stat().st_size < (quantized / "onnx/model_text.onnx.data").stat().st_size


def test_the_measured_agreement_is_recorded(quantized):
    config = json.loads((quantized / "oblique_export_config.json").read_text())
    assert config["default_variant"] == "qint8"
    assert set(config["verification"]) == {"onnx/fp32", "onnx/qint8", "openvino/fp32", "openvino/qint8"}
    for key, report in config["verification"].items():
        for modality, entry in report.items():
            assert entry["inputs"] >= 8
            if key.endswith("qint8"):
                assert MIN_TOKEN_COSINE <= entry["min_token_cosine"] <= entry["mean_token_cosine"] < 1.0, (key, modality)
            else:
                assert entry["max_abs_diff"] <= 1e-4
