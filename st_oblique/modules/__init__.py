"""Sentence Transformers modules of st-oblique: one concept per file.

- :class:`ObliquePooling` (``pooling``): K unit tokens of size d from a backbone's token states;
- :class:`ClassTokenTransformer` (``class_token_transformer``): K class tokens in a bidirectional text encoder;
- :class:`CLIPClassTokenTransformer` (``clip_class_token_transformer``): K class tokens in both towers of a HF CLIP;
- :class:`ImageClassTokenTransformer` (``image_class_token_transformer``): an image model, K class tokens in ViTs;
- :class:`TorchvisionImageClassTokenTransformer` (``torchvision_image_class_token_transformer``): the same, with
  torchvision's evaluation transform as preprocessing (bit for bit as CLIP-style models were evaluated);
- :class:`OpenCLIPEncoder` (``open_clip_encoder``): any open_clip model, K class tokens in both towers;
- :class:`ModalityRouter` (``modality_router``): separate text and image towers, routed by modality;
- :class:`TokenLayerNorm` (``token_layer_norm``): a LayerNorm over every token state, as its own module;
- :class:`ExtraClassTokens` (``vit_towers``): the K−1 extra class tokens of a ViT and how they enter it;
- :func:`lock_tower` (``tower_lock``): freeze a pretrained tower (LiT), recorded in the model;
- :class:`ExportedObliqueEncoder` (``exported_oblique_encoder``): a whole model as ONNX / OpenVINO graphs, loaded with
  ``backend="onnx"`` / ``"openvino"`` (written by :func:`st_oblique.export`).

:data:`MODULE_CLASSES` is the registry of the module classes a saved model names in its ``modules.json``; the model
layer trusts exactly these (:class:`~st_oblique.ObliqueSentenceTransformer` loads them without
``trust_remote_code``). Everything is imported on first use (the multimodal modules pull in open_clip, timm, PIL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from st_oblique.lazy_exports import lazy_exports

MODULE_CLASSES: dict[str, str] = {
    "ObliquePooling": "st_oblique.modules.pooling",
    "ClassTokenTransformer": "st_oblique.modules.class_token_transformer",
    "CLIPClassTokenTransformer": "st_oblique.modules.clip_class_token_transformer",
    "ImageClassTokenTransformer": "st_oblique.modules.image_class_token_transformer",
    "TorchvisionImageClassTokenTransformer": "st_oblique.modules.torchvision_image_class_token_transformer",
    "OpenCLIPEncoder": "st_oblique.modules.open_clip_encoder",
    "ModalityRouter": "st_oblique.modules.modality_router",
    "TokenLayerNorm": "st_oblique.modules.token_layer_norm",
    "ExportedObliqueEncoder": "st_oblique.modules.exported_oblique_encoder",
}
"""Every Sentence Transformers module class of st-oblique: ``{class name: module}``. Saved models name them in
``modules.json`` as ``module.ClassName``, so a class here never changes its name or file (a renamed one gets an entry
in :data:`st_oblique.model.sentence_transformer.RENAMED_MODULE_CLASS_REFS`). A new module class is added here."""

_HELPERS: dict[str, str] = {
    "ExtraClassTokens": "st_oblique.modules.vit_towers",
    "lock_tower": "st_oblique.modules.tower_lock",
}

__all__ = ["MODULE_CLASSES", *MODULE_CLASSES, *_HELPERS]

__getattr__, __dir__ = lazy_exports(__name__, {**MODULE_CLASSES, **_HELPERS}, globals())


if TYPE_CHECKING:
    from st_oblique.modules.class_token_transformer import ClassTokenTransformer
    from st_oblique.modules.clip_class_token_transformer import CLIPClassTokenTransformer
    from st_oblique.modules.exported_oblique_encoder import ExportedObliqueEncoder
    from st_oblique.modules.image_class_token_transformer import ImageClassTokenTransformer
    from st_oblique.modules.modality_router import ModalityRouter
    from st_oblique.modules.open_clip_encoder import OpenCLIPEncoder
    from st_oblique.modules.pooling import ObliquePooling
    from st_oblique.modules.token_layer_norm import TokenLayerNorm
    from st_oblique.modules.torchvision_image_class_token_transformer import TorchvisionImageClassTokenTransformer
    from st_oblique.modules.tower_lock import lock_tower
    from st_oblique.modules.vit_towers import ExtraClassTokens
