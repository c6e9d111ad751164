"""SmoothQuant before ONNX Runtime's dynamic int8 (st_oblique/export/smoothing.py).

Checked against an independent numpy computation of the paper's formula on a hand-built graph: the smoothed graph
computes the same function, its scales are ``max|X_j|**alpha / max|W_j|**(1-alpha)`` (shared by MatMuls reading one
input), and with an outlier channel in the activations it makes dynamic int8 closer to float than plain dynamic int8.
On a tiny oblique model: the exporter smooths the ONNX int8 graph exactly when it has calibration data, and says so.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime
import pytest
from export.export_models import text_inputs
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from tiny_models import SENTENCES

import st_oblique
from st_oblique.errors import ExportError
from st_oblique.export.quantization import quantize_onnx_dynamic
from st_oblique.export.smoothing import smooth_activation_outliers

WIDTH, HIDDEN = 16, 24
OUTLIER_CHANNEL, OUTLIER_SIZE = 3, 60.0
IR_VERSION = 10
"""The IR version torch's exporter writes; onnx's default (12 with onnx 1.19) is too new for ONNX Runtime 1.23."""


def two_layer_graph(path, seed: int = 0) -> dict[str, np.ndarray]:
    """``x (B, L, 16)`` -> ``x @ w_query`` and ``x @ w_key`` (one input, two weights) -> summed, Relu -> ``@ w_out``;
    returns the weights."""
    rng = np.random.default_rng(seed)
    weights = {
        "w_query": rng.normal(size=(WIDTH, HIDDEN)).astype(np.float32) / 4,
        "w_key": rng.normal(size=(WIDTH, HIDDEN)).astype(np.float32) / 4,
        "w_out": rng.normal(size=(HIDDEN, WIDTH)).astype(np.float32) / 5,
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w_query"], ["query"]),
        helper.make_node("MatMul", ["x", "w_key"], ["key"]),
        helper.make_node("Add", ["query", "key"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w_out"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "two_layers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "length", WIDTH])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION), str(path))
    return weights


def activations(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Inputs whose channel 3 is 60x larger than the others (the outlier feature of transformer activations)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        x = rng.normal(size=(2, 5, WIDTH)).astype(np.float32)
        x[..., OUTLIER_CHANNEL] *= OUTLIER_SIZE
        feeds.append({"x": x})
    return feeds


def run(path, feeds) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["y"], feed)[0] for feed in feeds])


def test_the_smoothed_graph_computes_the_same_function_with_the_papers_scales(tmp_path):
    weights = two_layer_graph(tmp_path / "float.onnx")
    calibration = activations(8, seed=1)
    report = smooth_activation_outliers(tmp_path / "float.onnx", tmp_path / "smoothed.onnx", calibration, alpha=0.8)
    assert (report.smoothed_inputs, report.matmuls, report.calibration_inputs) == (2, 3, 8)

    test = activations(4, seed=2)
    np.testing.assert_allclose(run(tmp_path / "smoothed.onnx", test), run(tmp_path / "float.onnx", test), rtol=1e-4, atol=1e-4)

    # independent float64 computation of s_j = max|X_j|^a / max|W_j,:|^(1-a), for the input x (two weights share it)
    x_max = np.max([np.abs(feed["x"].astype(np.float64)).reshape(-1, WIDTH).max(axis=0) for feed in calibration], axis=0)
    w_max = np.maximum(np.abs(weights["w_query"]).max(axis=1), np.abs(weights["w_key"]).max(axis=1)).astype(np.float64)
    expected = x_max**0.8 / w_max**0.2
    smoothed = onnx.load(str(tmp_path / "smoothed.onnx"))
    tensors = {tensor.name: numpy_helper.to_array(tensor) for tensor in smoothed.graph.initializer}
    np.testing.assert_allclose(1.0 / tensors["x__inverse_scale"], expected, rtol=1e-5)
    np.testing.assert_allclose(tensors["w_query"], weights["w_query"] * expected[:, None], rtol=1e-5)
    np.testing.assert_allclose(tensors["w_key"], weights["w_key"] * expected[:, None], rtol=1e-5)
    # the smoothing Mul runs before the MatMuls that read it (the graph stays topologically ordered)
    order = [node.name or node.output[0] for node in smoothed.graph.node]
    assert order.index("x__smooth") < min(order.index(node.name or node.output[0]) for node in smoothed.graph.node
                                          if node.op_type == "MatMul")
    onnx.checker.check_model(smoothed, full_check=True)


def test_smoothing_brings_dynamic_int8_closer_to_float_when_an_activation_channel_is_an_outlier(tmp_path):
    two_layer_graph(tmp_path / "float.onnx")
    smooth_activation_outliers(tmp_path / "float.onnx", tmp_path / "smoothed.onnx", activations(8, seed=1))
    for name in ("float", "smoothed"):
        quantize_dynamic(str(tmp_path / f"{name}.onnx"), str(tmp_path / f"{name}_int8.onnx"),
                         weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
    test = activations(4, seed=2)
    reference = run(tmp_path / "float.onnx", test)
    plain_error = np.abs(run(tmp_path / "float_int8.onnx", test) - reference).mean()
    smoothed_error = np.abs(run(tmp_path / "smoothed_int8.onnx", test) - reference).mean()
    assert smoothed_error < 0.75 * plain_error, (smoothed_error, plain_error)


def test_a_graph_without_constant_weight_matmuls_is_written_unchanged(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "no_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "length", WIDTH])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION), str(tmp_path / "float.onnx"))
    report = smooth_activation_outliers(tmp_path / "float.onnx", tmp_path / "smoothed.onnx", activations(2, seed=0))
    assert (report.smoothed_inputs, report.matmuls) == (0, 0)
    test = activations(2, seed=1)
    np.testing.assert_array_equal(run(tmp_path / "smoothed.onnx", test), run(tmp_path / "float.onnx", test))


def test_smoothing_refuses_missing_calibration_and_a_bad_alpha(tmp_path):
    two_layer_graph(tmp_path / "float.onnx")
    with pytest.raises(ExportError, match="calibration"):
        smooth_activation_outliers(tmp_path / "float.onnx", tmp_path / "out.onnx", [])
    with pytest.raises(ExportError, match=r"alpha=1.5 must lie in \[0, 1\]"):
        smooth_activation_outliers(tmp_path / "float.onnx", tmp_path / "out.onnx", activations(2, seed=0), alpha=1.5)
    assert not (tmp_path / "out.onnx").exists()


def smoothing_muls(path) -> int:
    graph = onnx.load(str(path), load_external_data=False).graph
    return Counter(node.op_type for node in graph.node if node.name.endswith("__smooth"))["Mul"]


def test_the_int8_graph_keeps_the_smoothing_where_it_brings_the_tokens_closer(tmp_path):
    two_layer_graph(tmp_path / "float.onnx")
    record = quantize_onnx_dynamic(tmp_path / "float.onnx", tmp_path / "int8.onnx", {"modality": "text"},
                                   activations(8, seed=1), check_inputs=activations(4, seed=2))
    assert record["kept"] and record["mean_token_cosine"]["smoothed"] > record["mean_token_cosine"]["plain"]
    assert record["checked_inputs"] == 12 and smoothing_muls(tmp_path / "int8.onnx") == record["smoothed_inputs"] == 2
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.endswith(".data")) == ["float.onnx", "int8.onnx"]
    test = activations(4, seed=3)  # and the kept graph runs from its own folder, external weights included
    assert np.abs(run(tmp_path / "int8.onnx", test) - run(tmp_path / "float.onnx", test)).max() < 1.0


def test_the_int8_graph_drops_the_smoothing_where_inputs_unlike_the_calibration_make_it_worse(tmp_path):
    """A channel quiet in every calibration input gets a tiny scale, so smoothing multiplies it by a large factor;
    on inputs where that channel is ordinary it becomes the outlier that sets the whole batch's int8 scale."""
    two_layer_graph(tmp_path / "float.onnx")
    quiet = activations(8, seed=1)
    for feed in quiet:
        feed["x"][..., 7] *= 1e-3
    record = quantize_onnx_dynamic(tmp_path / "float.onnx", tmp_path / "int8.onnx", {"modality": "text"}, quiet,
                                   check_inputs=activations(16, seed=2))
    assert not record["kept"] and record["mean_token_cosine"]["plain"] > record["mean_token_cosine"]["smoothed"]
    assert smoothing_muls(tmp_path / "int8.onnx") == 0


@pytest.mark.slow
def test_the_exporter_smooths_onnx_int8_exactly_when_it_has_calibration_data(family_model, tmp_path, caplog):
    model = family_model("bert")
    with_data, without = tmp_path / "with", tmp_path / "without"
    st_oblique.export(model, with_data, format="onnx", quantize="int8", calibration=SENTENCES * 4)
    with caplog.at_level("INFO", logger="st_oblique.export.exporter"):
        st_oblique.export(model, without, format="onnx", quantize="int8")
    assert "plain dynamic quantization" in caplog.text

    config = json.loads((with_data / "oblique_export_config.json").read_text())
    smoothing = config["modalities"]["text"]["int8"]["onnx"]["smoothing"]
    assert smoothing["method"] == "smoothquant" and smoothing["alpha"] == 0.8 and smoothing["calibration_inputs"] > 0
    cosines = smoothing["mean_token_cosine"]
    assert smoothing["kept"] == (cosines["smoothed"] >= cosines["plain"])
    expected_muls = smoothing["smoothed_inputs"] if smoothing["kept"] else 0
    assert smoothing["smoothed_inputs"] > 0 and smoothing_muls(with_data / "onnx/model_text_qint8.onnx") == expected_muls
    plain = json.loads((without / "oblique_export_config.json").read_text())["modalities"]["text"]["int8"]["onnx"]
    assert plain == {"method": "dynamic", "smoothing": None}
    assert smoothing_muls(without / "onnx/model_text_qint8.onnx") == 0
    assert sorted(path.name for path in (with_data / "onnx").iterdir()) == [
        "model_text.onnx", "model_text.onnx.data", "model_text_qint8.onnx", "model_text_qint8.onnx.data"
    ]  # nothing of the candidates is left in the folder
    loaded = st_oblique.load(str(with_data), backend="onnx")
    expected = model.encode(text_inputs(), convert_to_tensor=True)
    difference = (loaded.encode(text_inputs(), convert_to_tensor=True) - expected).abs().max()
    assert 1e-4 < float(difference) < 0.2  # int8 (not the float graph), and close to torch
