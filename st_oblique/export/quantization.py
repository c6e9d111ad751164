"""int8 variants of exported graphs: ONNX Runtime's dynamic quantization and OpenVINO's static quantization (NNCF).

- **ONNX** (``onnx/model_<modality>_qint8.onnx``): ``onnxruntime.quantization.quantize_dynamic``, the method
  behind Sentence Transformers' ``export_dynamic_quantized_onnx_model``: int8 weights (per output channel) of the
  MatMul/Gemm nodes, activations quantized at run time from their own range. No calibration data needed; when some
  is given, the graph is first smoothed (:mod:`st_oblique.export.smoothing`, SmoothQuant), which keeps a frozen
  pretrained tower's ranking quality that plain dynamic quantization loses.
- **OpenVINO** (``openvino/openvino_model_<modality>_qint8.xml``): ``nncf.quantize``, the method behind Sentence
  Transformers' ``export_static_quantized_openvino_model``: int8 weights and activations whose ranges are measured
  on a calibration set, which the user passes (texts for a text graph, images for an image graph).

How much of the torch model's quality each keeps is measured, not assumed: :func:`st_oblique.export` compares
every variant with the torch model on probe inputs and records it in the folder's config
(``verification``); ``evaluation/benchmarks/export_speed.py`` measures retrieval and STS quality and speed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from st_oblique._compat import kept_signal_stack
from st_oblique.errors import ExportError
from st_oblique.export.graphs import save_openvino, set_onnx_metadata
from st_oblique.export.smoothing import DEFAULT_SMOOTHING_ALPHA, smooth_activation_outliers
from st_oblique.modules.graph_runtimes import import_backend

__all__ = ["QUANTIZATIONS", "quantize_onnx_dynamic", "quantize_openvino_static"]

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("int8",)
"""The values of ``quantize=`` (None: float32 graphs only)."""
VARIANT = "qint8"
"""The name of the int8 variant in file names and in the config (as Sentence Transformers names its files)."""


def quantize_onnx_dynamic(
    source: Path,
    target: Path,
    metadata: dict[str, str],
    calibration: list[dict[str, np.ndarray]] | None = None,
    *,
    check_inputs: list[dict[str, np.ndarray]] | None = None,
    smoothing_alpha: float = DEFAULT_SMOOTHING_ALPHA,
) -> dict[str, Any] | None:
    """Write the dynamically quantized int8 version of the ONNX graph ``source`` to ``target`` (+ ``.data``).

    With calibration data the graph is also smoothed first (SmoothQuant,
    :func:`~st_oblique.export.smoothing.smooth_activation_outliers`) and both int8 graphs, smoothed and plain, are run
    on ``check_inputs`` (plus the calibration inputs): the one whose ``(B, K, d)`` tokens are closer to the float
    graph's (mean cosine) is kept. Smoothing helps when a few activation channels are outliers on inputs like the
    calibration data; it can hurt on inputs unlike them (a channel quiet in calibration gets amplified), and the check
    keeps the plain graph then.

    Args:
        source: the float32 ONNX graph, output ``(B, K, d)``.
        target: the int8 graph to write.
        metadata: st-oblique's metadata for the graph.
        calibration: the graph's inputs for each calibration example (``{input name: array}``); without it, plain
            dynamic quantization as Sentence Transformers does it.
        check_inputs: more graph inputs the two int8 graphs are compared on (the export's probe inputs).
        smoothing_alpha: SmoothQuant's migration strength.

    Returns:
        None without calibration; otherwise the smoothing's record for the folder's config: ``{"method":
        "smoothquant", "alpha", "smoothed_inputs", "matmuls", "calibration_inputs", "kept", "mean_token_cosine":
        {"smoothed", "plain"}, "checked_inputs"}``.

    Raises:
        ExportError: smoothing or ONNX Runtime's quantizer failed.
    """
    import_backend("onnx", "quantize ONNX graphs")
    if not calibration:
        _quantize_dynamic(source, target)
        set_onnx_metadata(target, metadata)
        return None
    feeds = [*(check_inputs or []), *calibration]
    with tempfile.TemporaryDirectory(prefix="st-oblique-int8-", dir=target.parent) as folder:
        smoothed_float = Path(folder) / "smoothed.onnx"
        report = smooth_activation_outliers(source, smoothed_float, calibration, alpha=smoothing_alpha)
        candidates = {"smoothed": Path(folder) / "smoothed" / target.name, "plain": Path(folder) / "plain" / target.name}
        _quantize_dynamic(smoothed_float, candidates["smoothed"])
        _quantize_dynamic(source, candidates["plain"])
        cosines = _mean_token_cosines(source, candidates, feeds)
        kept = "smoothed" if cosines["smoothed"] >= cosines["plain"] else "plain"
        for path in (candidates[kept], Path(str(candidates[kept]) + ".data")):
            if path.exists():  # (small graphs keep their weights inside the .onnx)
                shutil.move(str(path), str(target.parent / path.name))  # same file names: it finds its .data
    set_onnx_metadata(target, metadata)
    return {
        **report.as_config(),
        "kept": kept == "smoothed",
        "mean_token_cosine": cosines,
        "checked_inputs": len(feeds),
    }


def _quantize_dynamic(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet():
            quantize_dynamic(
                str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                op_types_to_quantize=["MatMul", "Gemm"], use_external_data_format=True,
            )
    except Exception as error:  # the quantizer raises plain exceptions of several kinds
        raise ExportError(f"ONNX Runtime could not quantize {source.name}: {error}") from error


def _mean_token_cosines(reference: Path, candidates: dict[str, Path], feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Mean cosine between each candidate graph's output tokens (the last axis of ``(B, K, d)``) and the reference
    graph's, over ``feeds``."""
    import onnxruntime

    def outputs(path: Path) -> list[np.ndarray]:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [session.run(None, feed)[0] for feed in feeds]

    expected = outputs(reference)
    cosines = {}
    for name, path in candidates.items():
        values = []
        for actual, wanted in zip(outputs(path), expected, strict=True):
            norms = np.linalg.norm(actual, axis=-1) * np.linalg.norm(wanted, axis=-1)
            values.append(((actual * wanted).sum(axis=-1) / np.maximum(norms, 1e-12)).ravel())
        cosines[name] = float(np.concatenate(values).mean())
    return cosines


def quantize_openvino_static(
    source: Path, target: Path, calibration: list[dict[str, np.ndarray]], metadata: dict[str, str], *, transformer: bool
) -> None:
    """Write the statically quantized int8 version of the OpenVINO graph ``source`` to ``target``, with activation
    ranges measured by NNCF on ``calibration``.

    Args:
        source: the float32 OpenVINO graph (``.xml``).
        target: the int8 graph to write (``.xml`` + ``.bin``).
        calibration: the graph's inputs for each calibration batch (``{input name: array}``).
        metadata: st-oblique's metadata for the graph (``rt_info``).
        transformer: the graph has attention blocks (NNCF's ``ModelType.TRANSFORMER``: SmoothQuant, and the
            transformer patterns kept in float).

    Raises:
        ExportError: NNCF failed, or there is no calibration data.
    """
    openvino = import_backend("openvino", "quantize OpenVINO graphs")
    try:
        import nncf
    except ImportError as error:
        from st_oblique.errors import MissingExtraError
        from st_oblique.modules.graph_runtimes import EXPORT_EXTRA_INSTALL

        raise MissingExtraError(
            f"OpenVINO int8 quantization needs the package 'nncf', which is not installed: {EXPORT_EXTRA_INSTALL}."
        ) from error
    if not calibration:
        raise ExportError("OpenVINO static int8 quantization needs calibration data; none was given.")
    model = openvino.Core().read_model(str(source))
    options: dict[str, Any] = {"subset_size": len(calibration)}
    if transformer:
        options["model_type"] = nncf.ModelType.TRANSFORMER
    try:
        with _quiet():
            with kept_signal_stack():  # NNCF runs the graph through OpenVINO (_compat hook 13)
                quantized = nncf.quantize(model, nncf.Dataset(calibration), **options)
    except Exception as error:  # NNCF raises plain exceptions of several kinds
        raise ExportError(f"NNCF could not quantize {source.name}: {error}") from error
    save_openvino(quantized, target, metadata)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's advice to pre-process and NNCF's progress bars are noise in st-oblique's progress output."""
    loggers = [logging.getLogger(name) for name in ("root", "nncf", "onnxruntime")]
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(logging.ERROR)
    try:
        # NNCF draws its progress bars with rich on stdout; st-oblique's own bar (stderr) shows the step
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for item, level in zip(loggers, levels, strict=True):
            item.setLevel(level)
