"""Fast CPU inference: whole oblique models exported to ONNX and OpenVINO graphs, float32 and int8.

``st_oblique.export(model, folder, format="onnx" | "openvino" | [both], quantize=None | "int8", calibration=...)``
(the same as :func:`export_model`; ``st-oblique export MODEL --format onnx --output DIR`` on the command line) writes a
complete Sentence Transformers model folder that loads with the usual ``backend`` argument::

    import st_oblique
    from sentence_transformers import SentenceTransformer

    st_oblique.export(st_oblique.load("runs/oblique-minilm"), "oblique-minilm-onnx", quantize="int8")
    model = st_oblique.load("oblique-minilm-onnx", backend="onnx")          # ST: trust_remote_code=True
    embeddings = model.encode(["A man plays a guitar."], truncate_dim=4 * 32)  # the first 4 whole tokens

Why st-oblique exports itself. Sentence Transformers' ONNX / OpenVINO backends export only its ``Transformer``
module, through optimum (which refuses architectures it does not know); pooling and everything after it stay in
torch. An oblique model's K class tokens enter its towers through st-oblique's modules and forward hooks
(:mod:`st_oblique.modules.vit_towers`), and the oblique head is a module of its own, so that route would lose the
class tokens and keep torch on the hot path. Here the model's own torch forward pass, every module included, is
traced per modality by ``torch.export`` into one graph from the preprocessing's tensors to the ``(B, K, d)``
embeddings (:mod:`st_oblique.export.graphs`); the tokenizer / image processor stay outside the graph, as in Sentence
Transformers, and are saved with it (:mod:`st_oblique.modules.exported_inputs`). The int8 variants use the methods of
Sentence Transformers' ``export_dynamic_quantized_onnx_model`` (ONNX Runtime, dynamic) and
``export_static_quantized_openvino_model`` (NNCF, static, calibrated) on these graphs
(:mod:`st_oblique.export.quantization`). Loading is :class:`~st_oblique.modules.exported_oblique_encoder.
ExportedObliqueEncoder`'s, the module the folder's ``modules.json`` names.

Parts: :mod:`~st_oblique.export.exporter` (the export and its checks), :mod:`~st_oblique.export.graphs` (tracing,
OpenVINO conversion), :mod:`~st_oblique.export.quantization`, :mod:`~st_oblique.export.calibration` (calibration and
probe inputs), :mod:`~st_oblique.export.input_specs` (what each input module's preprocessing needs).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from st_oblique.export.exporter import export_model

__all__ = ["export_model"]


class _CallableModule(types.ModuleType):
    """``st_oblique.export`` is this package and, called, :func:`export_model`: the package attribute that Python sets
    on ``st_oblique`` when ``st_oblique.export.<part>`` is imported would otherwise hide a function of that name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return export_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
