"""SmoothQuant for ONNX Runtime's dynamic int8: move activation outliers into the weights before quantizing.

Dynamic quantization (:func:`onnxruntime.quantization.quantize_dynamic`) gives each MatMul input **one** int8 scale
for the whole batch, set by its largest value. Transformer towers have a few input channels far larger than the rest
(the outlier features of LayerNorm outputs), so most channels keep only a few of the 256 levels; a frozen pretrained
tower behind a briefly trained head then loses ranking quality (measured on the LiT dual encoder of
``evaluation/benchmarks/export_speed.py``: 93.4 % of torch's text -> image R@10 without smoothing, 100.6 % with;
``evaluation/results/benchmarks/export_speed.json``).

SmoothQuant (Xiao et al., 2023) divides each input channel ``j`` of a linear layer by ``s_j`` and multiplies row
``j`` of its weight by ``s_j``, which leaves the float result unchanged (``(X / s) (s W) = X W``) and balances the
ranges of activations and weights::

    s_j = max|X_j| ** alpha / max|W_j,:| ** (1 - alpha)

``max|X_j|`` is measured on calibration inputs. Here the division is a ``Mul`` by ``1 / s`` inserted on the MatMul's
input (a post-LN BERT's LayerNorm output also feeds the residual stream, so it cannot be folded into the LayerNorm);
MatMuls sharing an input share one ``s``. ONNX Runtime's own SmoothQuant needs Intel Neural Compressor and static
quantization, and NNCF's (behind :func:`nncf.quantize`) comes with static quantization, whose QDQ graphs ONNX Runtime
ran slower than dynamic ones for the oblique MiniLM (it leaves their weight dequantization unfused): hence this small
pass.

Reference: Xiao, Lin, Seznec, Wu, Demouth, Han. "SmoothQuant: Accurate and Efficient Post-Training Quantization for
Large Language Models", ICML 2023, https://arxiv.org/abs/2211.10438
"""

from __future__ import annotations

import collections
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from st_oblique.errors import ExportError
from st_oblique.modules.graph_runtimes import import_backend

if TYPE_CHECKING:
    import onnx

__all__ = ["DEFAULT_SMOOTHING_ALPHA", "SmoothingReport", "smooth_activation_outliers"]

DEFAULT_SMOOTHING_ALPHA = 0.8
"""SmoothQuant's migration strength: 0 keeps the activations' ranges, 1 moves them entirely into the weights (the paper
uses 0.5 to 0.85). The export benchmark's graphs use 0.8, chosen over 0.5 on the LiT dual encoder's text graph."""


@dataclass(frozen=True)
class SmoothingReport:
    """What :func:`smooth_activation_outliers` did.

    Attributes:
        alpha: the migration strength used.
        smoothed_inputs: how many MatMul inputs got a smoothing ``Mul`` (each shared by ``matmuls`` weights).
        matmuls: how many constant-weight MatMuls were rescaled.
        calibration_inputs: on how many calibration inputs ``max|X_j|`` was measured.
    """

    alpha: float
    smoothed_inputs: int
    matmuls: int
    calibration_inputs: int

    def as_config(self) -> dict[str, float | int | str]:
        return {"method": "smoothquant", **dataclasses.asdict(self)}


def smooth_activation_outliers(
    source: Path, target: Path, calibration: list[dict[str, np.ndarray]], *, alpha: float = DEFAULT_SMOOTHING_ALPHA
) -> SmoothingReport:
    """Write to ``target`` (+ ``target.data``) the float graph ``source`` with SmoothQuant's rescaling applied to every
    MatMul whose weight is a constant 2-D matrix ``(in, out)``; the graph computes the same function.

    Args:
        source: a float32 ONNX graph (weights may be external).
        target: the smoothed graph to write.
        calibration: graph inputs (``{input name: array}``), one entry per run; ``max|X_j|`` is taken over all.
        alpha: the migration strength in ``[0, 1]``.

    Returns:
        A :class:`SmoothingReport`.

    Raises:
        ExportError: no calibration inputs, an ``alpha`` outside ``[0, 1]``, or ONNX Runtime cannot run the graph.
    """
    import_backend("onnx", "smooth ONNX graphs before int8 quantization")
    import onnx
    from onnx import numpy_helper

    if not calibration:
        raise ExportError("SmoothQuant measures activation ranges on calibration inputs; none were given.")
    if not 0.0 <= alpha <= 1.0:
        raise ExportError(f"The smoothing strength alpha={alpha} must lie in [0, 1] (0.8 is the default).")
    model = onnx.load(str(source))
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    by_input: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and len(weights[node.input[1]].dims) == 2:
            by_input[node.input[0]].append(node)
    inputs = list(by_input)
    maxima = _channel_maxima(model, inputs, calibration)

    scales: dict[str, np.ndarray] = {}
    for name, nodes in by_input.items():
        matrices = [numpy_helper.to_array(weights[node.input[1]]) for node in nodes]
        weight_max = np.max([np.abs(matrix).max(axis=1) for matrix in matrices], axis=0)  # (in,)
        scale = np.maximum(maxima[name], 1e-5) ** alpha / np.maximum(weight_max, 1e-5) ** (1.0 - alpha)
        scale = np.clip(scale, 1e-5, None).astype(np.float32)
        scales[name] = scale
        for node, matrix in zip(nodes, matrices, strict=True):
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(matrix * scale[:, None], node.input[1]))

    smoothed = {name: f"{name}__smoothed" for name in inputs}
    for name, nodes in by_input.items():
        for node in nodes:
            node.input[0] = smoothed[name]
    multiplies = {
        name: onnx.helper.make_node("Mul", [name, f"{name}__inverse_scale"], [smoothed[name]], name=f"{name}__smooth")
        for name in inputs
    }
    for name in inputs:
        graph.initializer.append(numpy_helper.from_array(1.0 / scales[name], f"{name}__inverse_scale"))
    _insert_after_producers(graph, multiplies)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target), save_as_external_data=True, location=target.name + ".data")
    return SmoothingReport(
        alpha=alpha,
        smoothed_inputs=len(inputs),
        matmuls=sum(len(nodes) for nodes in by_input.values()),
        calibration_inputs=len(calibration),
    )


def _channel_maxima(
    model: onnx.ModelProto, names: list[str], calibration: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """``max|X_j|`` over every calibration run and position, per channel ``j`` of each tensor in ``names`` (``(C,)``
    each): the graph is run once per calibration entry with those tensors as extra outputs."""
    import onnx
    import onnxruntime

    if not names:  # nothing to smooth (a CNN tower whose weights are not plain MatMul constants); session.run([])
        return {}  # would return every output
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {output.name for output in probe.graph.output}
    for name in names:
        if name not in present:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory(prefix="st-oblique-smoothing-") as folder:
        path = Path(folder) / "probe.onnx"  # a file, not bytes: towers above 2 GB exceed protobuf's limit
        onnx.save(probe, str(path), save_as_external_data=True, location="probe.onnx.data")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            maxima: dict[str, np.ndarray] = {}
            for feed in calibration:
                for name, value in zip(names, session.run(names, feed), strict=True):
                    channel_max = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
                    maxima[name] = channel_max if name not in maxima else np.maximum(maxima[name], channel_max)
        except Exception as error:  # ONNX Runtime raises its own exception types
            raise ExportError(f"ONNX Runtime could not run the graph on the calibration inputs to smooth it: {error}") from error
    return maxima


def _insert_after_producers(graph: onnx.GraphProto, new_nodes: dict[str, onnx.NodeProto]) -> None:
    """Insert each ``new_nodes[tensor]`` right after the node producing ``tensor`` (first, for graph inputs), so the
    node list stays in topological order."""
    producers = {output: index for index, node in enumerate(graph.node) for output in node.output}
    after: dict[int, list[onnx.NodeProto]] = collections.defaultdict(list)
    for tensor, node in new_nodes.items():
        after[producers.get(tensor, -1)].append(node)
    ordered = list(after[-1])
    for index, node in enumerate(graph.node):
        ordered.append(node)
        ordered.extend(after[index])
    del graph.node[:]
    graph.node.extend(ordered)
