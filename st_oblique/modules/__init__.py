"""Sentence Transformers modules of st-oblique: one concept per file.

- :class:`ObliquePooling` (``pooling``): K unit tokens of size d from a backbone's token states;
- :class:`ClassTokenTransformer` (``class_token_transformer``): K class tokens in a bidirectional text encoder;
- :class:`CLIPClassTokenTransformer` (``clip_class_token_transformer``): K class tokens in both towers of a HF CLIP;
- :class:`ImageClassTokenTransformer` (``image_class_token_transformer``): an image model, K class tokens in ViTs;
- :class:`OpenCLIPEncoder` (``open_clip_encoder``): any open_clip model, K class tokens in both towers;
- :class:`ModalityRouter` (``modality_router``): separate text and image towers, routed by modality;
- :class:`ExtraClassTokens` (``vit_towers``): the K−1 extra class tokens of a ViT and how they enter it;
- :func:`lock_tower` (``tower_lock``): freeze a pretrained tower (LiT), recorded in the model;
- :class:`ExportedObliqueEncoder` (``exported_oblique_encoder``): a whole model as ONNX / OpenVINO graphs, loaded with
  ``backend="onnx"`` / ``"openvino"`` (written by :func:`st_oblique.export`).

The multimodal modules are imported on first use (they pull in open_clip, timm and PIL).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from st_oblique.modules.class_token_transformer import ClassTokenTransformer
from st_oblique.modules.pooling import ObliquePooling

_LAZY: dict[str, str] = {
    "CLIPClassTokenTransformer": "st_oblique.modules.clip_class_token_transformer",
    "ImageClassTokenTransformer": "st_oblique.modules.image_class_token_transformer",
    "ExtraClassTokens": "st_oblique.modules.vit_towers",
    "OpenCLIPEncoder": "st_oblique.modules.open_clip_encoder",
    "ModalityRouter": "st_oblique.modules.modality_router",
    "lock_tower": "st_oblique.modules.tower_lock",
    "ExportedObliqueEncoder": "st_oblique.modules.exported_oblique_encoder",
}

__all__ = [
    "CLIPClassTokenTransformer",
    "ClassTokenTransformer",
    "ExportedObliqueEncoder",
    "ExtraClassTokens",
    "ImageClassTokenTransformer",
    "ModalityRouter",
    "ObliquePooling",
    "OpenCLIPEncoder",
    "lock_tower",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'st_oblique.modules' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from st_oblique.modules.clip_class_token_transformer import CLIPClassTokenTransformer
    from st_oblique.modules.exported_oblique_encoder import ExportedObliqueEncoder
    from st_oblique.modules.image_class_token_transformer import ImageClassTokenTransformer
    from st_oblique.modules.modality_router import ModalityRouter
    from st_oblique.modules.open_clip_encoder import OpenCLIPEncoder
    from st_oblique.modules.tower_lock import lock_tower
    from st_oblique.modules.vit_towers import ExtraClassTokens
