"""int8 variants of exported graphs: ONNX Runtime's dynamic quantization and OpenVINO's static quantization (NNCF).

- **ONNX** (``onnx/model_<modality>_qint8.onnx``): ``onnxruntime.quantization.quantize_dynamic``, the method
  behind Sentence Transformers' ``export_dynamic_quantized_onnx_model``: int8 weights (per output channel) of the
  MatMul/Gemm nodes, activations quantized at run time from their own range. No calibration data needed.
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
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from st_oblique._compat import kept_signal_stack
from st_oblique.errors import ExportError
from st_oblique.export.graphs import save_openvino, set_onnx_metadata
from st_oblique.modules.graph_runtimes import import_backend

__all__ = ["QUANTIZATIONS", "quantize_onnx_dynamic", "quantize_openvino_static"]

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("int8",)
"""The values of ``quantize=`` (None: float32 graphs only)."""
VARIANT = "qint8"
"""The name of the int8 variant in file names and in the config (as Sentence Transformers names its files)."""


def quantize_onnx_dynamic(source: Path, target: Path, metadata: dict[str, str]) -> None:
    """Write the dynamically quantized int8 version of the ONNX graph ``source`` to ``target`` (+ ``.data``).

    Raises:
        ExportError: ONNX Runtime's quantizer failed.
    """
    import_backend("onnx", "quantize ONNX graphs")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet():
            quantize_dynamic(
                str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                op_types_to_quantize=["MatMul", "Gemm"], use_external_data_format=True,
            )
    except Exception as error:  # the quantizer raises plain exceptions of several kinds
        raise ExportError(f"ONNX Runtime could not quantize {source.name}: {error}") from error
    set_onnx_metadata(target, metadata)


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
