"""Trace one modality of an oblique model into an ONNX graph, and convert ONNX graphs to OpenVINO.

The graph is the model's own torch forward pass (``SentenceTransformer.forward``: every module, the Router, the
class tokens' hooks and the oblique head) for one modality, as a function of the tensors its preprocessing makes,
traced by ``torch.export`` (``torch.onnx.export(..., dynamo=True)``) with a dynamic batch axis and, for texts, a
dynamic sequence axis. Nothing is re-implemented for the export, so a new token source or tower exports as it runs.
Each graph records what it computes (modality, K, d, token source, opset) in its own metadata, which
:class:`~st_oblique.modules.exported_oblique_encoder.ExportedObliqueEncoder` checks on loading.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from st_oblique.errors import ExportError
from st_oblique.modules.graph_runtimes import METADATA_PREFIX, import_backend, read_graph_info

__all__ = ["DEFAULT_OPSET", "OUTPUT_NAME", "ModalityForward", "graph_inputs", "onnx_to_openvino", "trace_to_onnx"]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 20
"""ONNX opset of exported graphs: supported by ONNX Runtime >= 1.17 and OpenVINO >= 2024."""
OUTPUT_NAME = "oblique_embeddings"


class ModalityForward(nn.Module):
    """The whole model's forward pass for one modality, from the preprocessing's tensors to ``(B, K, d)``: what
    is exported.

    It calls the SentenceTransformer itself (``model(features)``), so every module runs as in ``encode``, and
    returns its ``sentence_embedding`` ``(B, K*d)`` viewed as ``(B, K, d)``.

    Args:
        model: the oblique SentenceTransformer (in eval mode, float32).
        modality: ``"text"`` or ``"image"``.
        num_tokens: K.
        token_dim: d.
    """

    def __init__(self, model: nn.Module, modality: str, num_tokens: int, token_dim: int) -> None:
        super().__init__()
        self.model = model
        self.modality = modality
        self.num_tokens = num_tokens
        self.token_dim = token_dim

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        output = self.model({**features, "modality": self.modality})
        embedding = output["sentence_embedding"]
        return embedding.reshape(embedding.shape[0], self.num_tokens, self.token_dim)


def graph_inputs(features: dict[str, Any]) -> dict[str, Tensor]:
    """The tensors of a preprocessed batch that become graph inputs: the per-example ones, ``(B, ...)`` with at
    least two axes (``input_ids``, ``attention_mask``, ``token_type_ids``, ``pixel_values``); bookkeeping such as
    ``prompt_length`` is left out."""
    return {name: value for name, value in features.items() if isinstance(value, Tensor) and value.ndim >= 2}


def trace_to_onnx(
    model: nn.Module,
    modality: str,
    sample: dict[str, Tensor],
    path: Path,
    *,
    num_tokens: int,
    token_dim: int,
    token_source: str,
    opset: int = DEFAULT_OPSET,
) -> list[str]:
    """Export ``model``'s forward pass for ``modality`` to the ONNX graph ``path`` (+ ``path.data``, its weights).

    Args:
        model: the oblique SentenceTransformer, on the CPU, float32, in eval mode.
        modality: ``"text"`` or ``"image"``.
        sample: a preprocessed batch of at least 2 examples (the trace's example inputs; 2-D inputs get dynamic
            batch and sequence axes, others a dynamic batch axis).
        path: the ``.onnx`` file to write.
        num_tokens, token_dim, token_source: recorded in the graph's metadata.
        opset: the ONNX opset.

    Returns:
        The graph's input names, in order.

    Raises:
        ExportError: ``torch.export`` or the ONNX translation failed (the message keeps the first lines of why).
    """
    inputs = graph_inputs(sample)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence")
    dynamic = {name: ({0: batch, 1: sequence} if value.ndim == 2 else {0: batch}) for name, value in inputs.items()}
    wrapper = ModalityForward(model, modality, num_tokens, token_dim).eval()
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                wrapper, (), kwargs={"features": inputs}, input_names=list(inputs), output_names=[OUTPUT_NAME],
                dynamic_shapes={"features": dynamic}, opset_version=opset, dynamo=True, verbose=False,
            )
    except Exception as error:  # torch.export and the ONNX translator raise many error types
        reason = "\n".join(str(error).strip().splitlines()[:12])
        raise ExportError(
            f"Tracing the {modality} tower for ONNX failed ({type(error).__name__}): {reason}\nThe model's forward pass "
            "contains something torch.export cannot trace (see the message); nothing was written."
        ) from error
    metadata = graph_metadata(modality, num_tokens, token_dim, token_source, opset, variant="fp32")
    program.model.metadata_props.update({f"{METADATA_PREFIX}.{key}": value for key, value in metadata.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=True)
    return list(inputs)


def graph_metadata(
    modality: str, num_tokens: int, token_dim: int, token_source: str, opset: int, variant: str
) -> dict[str, str]:
    """The metadata every exported graph carries (ONNX ``metadata_props`` keys ``st_oblique.<key>``, OpenVINO
    ``rt_info`` section ``st_oblique``)."""
    values = {
        "modality": modality,
        "num_tokens": num_tokens,
        "token_dim": token_dim,
        "token_source": token_source,
        "opset": opset,
        "variant": variant,
    }
    return {key: str(value) for key, value in values.items()}


def set_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set st-oblique's ``metadata`` (``{key: value}``) in the ONNX graph at ``path``, leaving its external weights
    untouched."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    current = {prop.key: prop.value for prop in model.metadata_props}
    current.update({f"{METADATA_PREFIX}.{key}": value for key, value in metadata.items()})
    onnx.helper.set_model_props(model, current)
    onnx.save(model, str(path))


def onnx_to_openvino(onnx_path: Path, xml_path: Path) -> None:
    """Convert an exported ONNX graph to OpenVINO IR (``.xml`` + ``.bin``, float32 weights), keeping its metadata
    (in ``rt_info``, section ``st_oblique``).

    Raises:
        ExportError: OpenVINO cannot convert the graph.
    """
    openvino = import_backend("openvino", "export to OpenVINO")
    metadata = read_graph_info("onnx", onnx_path).metadata
    try:  # the runtime's ONNX reader: openvino.convert_model would also send usage telemetry (openvino-telemetry
        # forks a process that resolves Google Analytics; offline, that child can hang the exporting process at exit)
        model = openvino.Core().read_model(str(onnx_path))
    except Exception as error:  # OpenVINO's conversion errors
        raise ExportError(f"OpenVINO {openvino.__version__} cannot convert {onnx_path.name}: {error}") from error
    save_openvino(model, xml_path, metadata)


def save_openvino(model: Any, xml_path: Path, metadata: dict[str, str]) -> None:
    """Save an OpenVINO model with st-oblique's metadata, weights uncompressed (``save_model`` would otherwise store
    float32 weights as float16)."""
    openvino = import_backend("openvino", "export to OpenVINO")
    for key, value in metadata.items():
        model.set_rt_info(str(value), [METADATA_PREFIX, key])
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    openvino.save_model(model, str(xml_path), compress_to_fp16=False)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's progress prints and warnings about axis names say nothing a user can act on."""
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(name) for name in names]
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_Discard()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for item, level in zip(loggers, levels, strict=True):
            item.setLevel(level)


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
