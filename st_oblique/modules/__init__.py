"""Sentence Transformers modules of st-oblique.

The multimodal modules are imported on first use (they pull in open_clip, timm and PIL).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from st_oblique.modules.pooling import ObliquePooling
from st_oblique.modules.serialization import ObliqueLoadError
from st_oblique.modules.text_class_tokens import ClassTokenTransformer

_LAZY: dict[str, str] = {
    "CLIPClassTokenTransformer": "st_oblique.modules.clip_class_tokens",
    "ImageClassTokenTransformer": "st_oblique.modules.image_class_tokens",
    "ExtraClassTokens": "st_oblique.modules.image_class_tokens",
    "OpenCLIPEncoder": "st_oblique.modules.open_clip_encoder",
    "ModalityRouter": "st_oblique.modules.modality_router",
}

__all__ = [
    "CLIPClassTokenTransformer",
    "ClassTokenTransformer",
    "ExtraClassTokens",
    "ImageClassTokenTransformer",
    "ModalityRouter",
    "ObliqueLoadError",
    "ObliquePooling",
    "OpenCLIPEncoder",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'st_oblique.modules' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from st_oblique.modules.clip_class_tokens import CLIPClassTokenTransformer
    from st_oblique.modules.image_class_tokens import ExtraClassTokens, ImageClassTokenTransformer
    from st_oblique.modules.modality_router import ModalityRouter
    from st_oblique.modules.open_clip_encoder import OpenCLIPEncoder
