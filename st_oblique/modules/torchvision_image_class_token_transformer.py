"""TorchvisionImageClassTokenTransformer: an image tower whose preprocessing is torchvision's evaluation transform.

CLIP-style models trained with torchvision (OpenAI CLIP, open_clip, the paper's official clip-mtob code) are
evaluated with ``Resize(shortest side) -> CenterCrop -> ToTensor -> Normalize`` on PIL images. Hugging Face's
image processors do the same steps but not bit for bit: their center crop rounds an odd margin down where
torchvision rounds it to the nearest even pixel (a one-pixel shift for a quarter of all photos), and their default
(torchvision tensor) backend resizes with a different kernel than PIL's. This module keeps the Hugging Face
checkpoint and its processor config (so the folder stays loadable by transformers) but computes ``pixel_values``
with torchvision's transform built from that config, so the embeddings are those of the original evaluation code.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torchvision import transforms

from st_oblique.data.images import batch_modality, load_images
from st_oblique.modules.image_class_token_transformer import ImageClassTokenTransformer

__all__ = ["TorchvisionImageClassTokenTransformer", "torchvision_eval_transform"]

_RESAMPLE_TO_TORCHVISION = {
    int(Image.Resampling.NEAREST): transforms.InterpolationMode.NEAREST,
    int(Image.Resampling.BILINEAR): transforms.InterpolationMode.BILINEAR,
    int(Image.Resampling.BICUBIC): transforms.InterpolationMode.BICUBIC,
    int(Image.Resampling.LANCZOS): transforms.InterpolationMode.LANCZOS,
}


def torchvision_eval_transform(processor: Any) -> transforms.Compose:
    """torchvision's ``Resize -> CenterCrop -> ToTensor -> Normalize`` with the settings of a Hugging Face CLIP-style
    image processor (``size={"shortest_edge": S}``, ``crop_size``, ``resample``, ``image_mean``, ``image_std``).

    Raises:
        ValueError: the processor resizes to a fixed height and width, or uses a resampling filter torchvision lacks.
    """
    size = getattr(processor, "size", None) or {}
    if "shortest_edge" not in size:
        raise ValueError(
            f"TorchvisionImageClassTokenTransformer needs an image processor that resizes the shortest edge "
            f"(size={{'shortest_edge': S}}); this one has size={size}. Use ImageClassTokenTransformer instead."
        )
    resample = int(getattr(processor, "resample", Image.Resampling.BICUBIC))
    if resample not in _RESAMPLE_TO_TORCHVISION:
        raise ValueError(f"Resampling filter {resample} of the image processor has no torchvision equivalent.")
    crop = processor.crop_size
    steps: list[Any] = [
        transforms.Resize(int(size["shortest_edge"]), interpolation=_RESAMPLE_TO_TORCHVISION[resample]),
        transforms.CenterCrop((int(crop["height"]), int(crop["width"]))),
        transforms.ToTensor(),
        transforms.Normalize(list(processor.image_mean), list(processor.image_std)),
    ]
    return transforms.Compose(steps)


class TorchvisionImageClassTokenTransformer(ImageClassTokenTransformer):
    """:class:`~st_oblique.modules.ImageClassTokenTransformer` whose images are preprocessed by torchvision.

    Everything but the preprocessing is :class:`~st_oblique.modules.ImageClassTokenTransformer`'s: a Hugging Face
    image model (e.g. ``CLIPVisionModel``) with K class tokens in its ViT, saved unchanged with its processor
    config. The ``pixel_values`` come from :func:`torchvision_eval_transform` of that processor config, i.e.
    PIL images (converted to RGB) -> ``Resize(shortest_edge, resample)`` -> ``CenterCrop(crop_size)`` ->
    ``ToTensor`` -> ``Normalize(image_mean, image_std)``, exactly the evaluation transform of OpenAI CLIP,
    open_clip and the paper's official clip-mtob code. :func:`st_oblique.converters.convert_clip_mtob` builds
    its image tower with it.

    Inputs: ``(B, 3, S, S)`` ``pixel_values`` from PIL images, paths, URLs or ``{"image": ...}`` dicts.
    Outputs: ``token_embeddings`` ``(B, K + N, H)``, class tokens first (as the parent class).

    Args:
        model_name_or_path: Hub id or local path of a Hugging Face image model with a CLIP-style image processor.
        **kwargs: everything :class:`~st_oblique.modules.ImageClassTokenTransformer` accepts.

    Example::

        from st_oblique.modules.torchvision_image_class_token_transformer import TorchvisionImageClassTokenTransformer

        tower = TorchvisionImageClassTokenTransformer("openai/clip-vit-base-patch16", num_class_tokens=16)
        features = tower.preprocess(["cat.jpg"])            # pixel_values (1, 3, 224, 224), torchvision's
        tokens = tower(features)["token_embeddings"]        # (1, 16 + 196, 768)
    """

    def __init__(self, model_name_or_path: str, **kwargs: Any) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.eval_transform = torchvision_eval_transform(self._image_processor())

    def _image_processor(self) -> Any:
        return getattr(self.processor, "image_processor", self.processor)

    def preprocess(self, inputs, prompt: str | None = None, processing_kwargs=None, **kwargs) -> dict[str, Any]:
        """Images -> ``{"pixel_values": (B, 3, S, S), "modality": "image"}`` with torchvision's transform."""
        if not inputs:
            return {}
        batch_modality(type(self).__name__, inputs, ["image"])
        pixel_values = torch.stack([self.eval_transform(image) for image in load_images(inputs)])
        return {"pixel_values": pixel_values, "modality": "image"}
