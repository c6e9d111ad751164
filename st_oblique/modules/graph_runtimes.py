"""Run an exported oblique graph with ONNX Runtime or OpenVINO, and read what a graph says about itself.

An exported oblique model holds one graph per modality, from the tensors its preprocessing produces to the
``(B, K, d)`` oblique embeddings (see :mod:`st_oblique.export`). This file is the only place that talks to the two
inference engines; both are optional (``pip install "st-oblique[export]"``) and imported when a graph is opened.

Every graph carries its own description, written at export: its output shape ``(batch, K, d)`` and st-oblique
metadata (``modality``, ``num_tokens``, ``token_dim``, ``token_source``, ``opset``) in the ONNX ``metadata_props``
or the OpenVINO ``rt_info`` (under ``st_oblique``). :func:`read_graph_info` reads it without loading the weights,
so a folder whose graphs do not match its config is refused before anything runs.

Example::

    from st_oblique.modules.graph_runtimes import open_graph

    graph = open_graph("onnx", "exported/onnx/model_text.onnx")
    tokens = graph.run({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})  # (B, K, d) numpy
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from st_oblique._compat import kept_signal_stack
from st_oblique.errors import MissingExtraError, ObliqueLoadError

__all__ = [
    "BACKENDS",
    "EXPORT_EXTRA_INSTALL",
    "GraphInfo",
    "ONNXRuntimeGraph",
    "OpenVINOGraph",
    "import_backend",
    "open_graph",
    "read_graph_info",
]

BACKENDS: tuple[str, ...] = ("onnx", "openvino")
"""The formats an oblique model is exported to, named as Sentence Transformers' ``backend`` argument names them."""

EXPORT_EXTRA_INSTALL = 'pip install "st-oblique[export]"'
"""The command that installs every package export and the exported backends need."""

METADATA_PREFIX = "st_oblique"
"""The key (OpenVINO ``rt_info`` section, ONNX ``metadata_props`` prefix ``st_oblique.``) of st-oblique's metadata."""

_PACKAGES = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino",)}
_NUMPY_DTYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "int64_t": np.int64,
    "i64": np.int64,
    "int32_t": np.int32,
    "i32": np.int32,
    "float": np.float32,
    "f32": np.float32,
}


def import_backend(backend: str, purpose: str = "run exported oblique models") -> Any:
    """Import the engine of ``backend`` (``onnxruntime`` for ``"onnx"``, ``openvino``), or raise
    :class:`~st_oblique.errors.MissingExtraError` with the ``pip install`` line of the ``[export]`` extra."""
    modules = []
    for package in _PACKAGES[backend]:
        try:
            modules.append(importlib.import_module(package))
        except ImportError as error:
            raise MissingExtraError(
                f"To {purpose} with backend={backend!r}, st-oblique needs the package {package!r}, which is not "
                f"installed: {EXPORT_EXTRA_INSTALL} (onnx, onnxruntime, openvino, nncf)."
            ) from error
    return modules[0]


@dataclass(frozen=True)
class GraphInfo:
    """What an exported graph says about itself.

    Attributes:
        path: the graph file.
        input_names: the graph's inputs, in order (e.g. ``["input_ids", "attention_mask", "token_type_ids"]``).
        input_dtypes: ``{name: numpy dtype}`` of the inputs.
        output_shape: the output's shape, ``[None, K, d]`` (None for the dynamic batch axis).
        metadata: st-oblique's metadata (``modality``, ``num_tokens``, ``token_dim``, ``token_source``, ``opset``,
            ``variant``), as strings.
        opset: the ONNX opset the graph was exported with (for OpenVINO: the opset of the ONNX graph it was
            converted from, as recorded at export).
    """

    path: Path
    input_names: list[str]
    input_dtypes: dict[str, Any]
    output_shape: list[int | None]
    metadata: dict[str, str] = field(default_factory=dict)
    opset: int | None = None


def read_graph_info(backend: str, path: str | Path) -> GraphInfo:
    """Read the inputs, output shape, metadata and opset of a graph file without loading its weights.

    Raises:
        ObliqueLoadError: the file is missing or not a readable graph of this format.
        MissingExtraError: the engine of ``backend`` is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise ObliqueLoadError(f"The exported graph {path} is missing. Export the model again (st_oblique.export).")
    if backend == "onnx":
        return _onnx_info(path)
    return _openvino_info(path)


def _onnx_info(path: Path) -> GraphInfo:
    import_backend("onnx")
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ObliqueLoadError(f"{path} is not a readable ONNX graph ({error}). Export the model again.") from error
    initializers = {initializer.name for initializer in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    element_types = {onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32, onnx.TensorProto.FLOAT: np.float32}
    output = model.graph.output[0].type.tensor_type.shape
    prefix = METADATA_PREFIX + "."
    return GraphInfo(
        path=path,
        input_names=[value.name for value in inputs],
        input_dtypes={value.name: element_types.get(value.type.tensor_type.elem_type, np.float32) for value in inputs},
        output_shape=[dim.dim_value if dim.HasField("dim_value") else None for dim in output.dim],
        metadata={
            prop.key[len(prefix) :]: prop.value for prop in model.metadata_props if prop.key.startswith(prefix)
        },
        opset=next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None),
    )


def _openvino_info(path: Path) -> GraphInfo:
    openvino = import_backend("openvino")
    try:
        model = openvino.Core().read_model(str(path))
    except Exception as error:  # OpenVINO raises RuntimeError for unreadable IR
        raise ObliqueLoadError(f"{path} is not a readable OpenVINO graph ({error}). Export the model again.") from error
    metadata = {}
    if model.has_rt_info([METADATA_PREFIX]):
        for key in model.get_rt_info([METADATA_PREFIX]).astype(dict):
            metadata[key] = model.get_rt_info([METADATA_PREFIX, key]).astype(str)
    shape = model.outputs[0].get_partial_shape()
    opset = metadata.get("opset")
    return GraphInfo(
        path=path,
        input_names=[port.get_any_name() for port in model.inputs],
        input_dtypes={port.get_any_name(): _NUMPY_DTYPES.get(port.get_element_type().get_type_name(), np.float32)
                      for port in model.inputs},
        output_shape=[None if dim.is_dynamic else dim.get_length() for dim in shape],
        metadata=metadata,
        opset=int(opset) if opset and opset.isdigit() else None,
    )


class ONNXRuntimeGraph:
    """An exported graph run by ONNX Runtime on the CPU (or the providers given).

    Args:
        info: the graph (see :func:`read_graph_info`).
        provider: an execution provider or a list of them (default ``"CPUExecutionProvider"``: ONNX Runtime's
            first available provider can be a remote one, e.g. ``AzureExecutionProvider``).
        provider_options: options of the providers, as ``onnxruntime.InferenceSession`` takes them.
        session_options: an ``onnxruntime.SessionOptions`` (threads: ``intra_op_num_threads``).
    """

    def __init__(
        self,
        info: GraphInfo,
        *,
        provider: str | list[str] | None = None,
        provider_options: list[dict[str, Any]] | None = None,
        session_options: Any = None,
    ) -> None:
        onnxruntime = import_backend("onnx")
        self.info = info
        providers = [provider] if isinstance(provider, str) else list(provider or ["CPUExecutionProvider"])
        try:
            self.session = onnxruntime.InferenceSession(
                str(info.path), sess_options=session_options, providers=providers, provider_options=provider_options
            )
        except Exception as error:  # ONNX Runtime's own error types (InvalidGraph, Fail, NotImplemented, ...)
            raise ObliqueLoadError(
                f"ONNX Runtime {onnxruntime.__version__} cannot load {info.path} ({str(error).strip()[:500]}). The "
                f"graph was exported with opset {info.opset}; upgrade onnxruntime or export again with a lower opset."
            ) from error
        self.output_name = self.session.get_outputs()[0].name

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's output for ``feeds`` (``{input name: array}``): ``(B, K, d)`` float32."""
        return self.session.run([self.output_name], feeds)[0]


class OpenVINOGraph:
    """An exported graph compiled by OpenVINO for the CPU.

    Args:
        info: the graph (see :func:`read_graph_info`).
        ov_config: OpenVINO properties (Sentence Transformers' ``model_kwargs={"ov_config": ...}``), e.g.
            ``{"INFERENCE_NUM_THREADS": 1}``. ``INFERENCE_PRECISION_HINT`` defaults to ``"f32"``: on CPUs with
            bfloat16 units (AMX, AVX512-BF16) OpenVINO would otherwise compute in bfloat16 and differ from torch in
            the third decimal; pass ``"bf16"`` to trade that accuracy for speed.
        device: the OpenVINO device (default ``"CPU"``).
    """

    def __init__(self, info: GraphInfo, *, ov_config: dict[str, Any] | None = None, device: str = "CPU") -> None:
        openvino = import_backend("openvino")
        self.info = info
        config = {"INFERENCE_PRECISION_HINT": "f32", **(ov_config or {})}
        with kept_signal_stack():  # OpenVINO would leave the thread on a signal stack of its own (_compat hook 13)
            try:
                self.compiled = openvino.Core().compile_model(str(info.path), device, config)
            except Exception as error:  # OpenVINO raises RuntimeError for what it cannot compile
                raise ObliqueLoadError(
                    f"OpenVINO {openvino.__version__} cannot compile {info.path} for {device} with {config} "
                    f"({str(error).strip()[:500]})."
                ) from error
            self.request = self.compiled.create_infer_request()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's output for ``feeds`` (``{input name: array}``): ``(B, K, d)`` float32."""
        with kept_signal_stack():
            outputs = self.request.infer(feeds)
            return np.array(outputs[self.compiled.outputs[0]], copy=True)  # the request reuses its buffers

    def __del__(self) -> None:
        try:
            with kept_signal_stack():  # freeing a compiled graph puts back the signal stack it found (hook 13)
                self.__dict__.pop("request", None)
                self.__dict__.pop("compiled", None)
        except TypeError:  # at interpreter shutdown the module's globals are None already; no signal follows
            pass


def open_graph(backend: str, path: str | Path, **options: Any) -> ONNXRuntimeGraph | OpenVINOGraph:
    """Open the graph at ``path`` with the engine of ``backend`` (``"onnx"`` or ``"openvino"``); ``options`` are
    the engine's (see :class:`ONNXRuntimeGraph`, :class:`OpenVINOGraph`)."""
    info = read_graph_info(backend, path)
    if backend == "onnx":
        return ONNXRuntimeGraph(info, **options)
    return OpenVINOGraph(info, **options)
