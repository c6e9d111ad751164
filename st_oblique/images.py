"""Image inputs: the one loader that turns whatever users, datasets and MTEB pass into an RGB PIL image.

Every st-oblique module that encodes images and the evaluation harness read images through :func:`load_image`,
so an image is accepted, converted and refused the same way everywhere.

Example::

    from st_oblique.images import load_image, load_images

    image = load_image("cat.jpg")                       # RGB PIL image
    batch = load_images([image, {"image": "dog.png"}])  # MTEB's {"image": ...} form too
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from sentence_transformers.base.modality import infer_batch_modality, raise_unsupported_modality_error
from transformers.image_transforms import to_pil_image
from transformers.image_utils import load_image as load_remote_image

from st_oblique.errors import ObliqueInputError

__all__ = ["batch_modality", "load_image", "load_images"]

_URL_PREFIXES = ("http://", "https://", "data:image/")


def load_image(image: Any) -> Image.Image:
    """One image input as an RGB ``PIL.Image.Image``.

    Accepts:

    - a PIL image of any mode (grayscale, RGBA, palette, ... are converted to RGB);
    - a local file path (``str`` or ``os.PathLike``), an http(s) URL or a ``data:image/`` URI;
    - encoded image bytes (``bytes``, ``bytearray``, ``memoryview``);
    - ``{"image": ...}`` (how MTEB sends images) or ``{"bytes": ..., "path": ...}`` (the raw form of a Hugging
      Face ``datasets.Image`` column);
    - an array or tensor: ``(H, W)`` grey, ``(H, W, C)`` or ``(C, H, W)`` with C in 1, 3, 4; integers in [0, 255]
      or floats in [0, 1].

    Raises:
        ObliqueInputError (a ValueError): the file does not exist or cannot be decoded (the message names it), or
            the input is not an image.
    """
    if isinstance(image, dict):
        image = _unwrap_dict(image)
    if isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, (str, os.PathLike)):
        pil = _open_location(image)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        pil = _decode(io.BytesIO(image), "the encoded image bytes")
    elif isinstance(image, (torch.Tensor, np.ndarray)):
        pil = _from_array(image)
    else:
        raise ObliqueInputError(
            f"Cannot use a {type(image).__name__} as an image; pass a PIL image, an image file path or URL, encoded "
            "bytes, a {'image': ...} dict or an array."
        )
    return pil if pil.mode == "RGB" else pil.convert("RGB")


def load_images(images: Sequence[Any]) -> list[Image.Image]:
    """:func:`load_image` for every item of a batch."""
    return [load_image(image) for image in images]


def batch_modality(module_name: str, inputs: Sequence[Any], supported: list[str]) -> str:
    """The modality of a batch (``"text"``, ``"image"``), raising ST's own clear error for a batch that mixes
    modalities ("Encode each modality separately") or holds one ``module_name`` does not support."""
    modality = infer_batch_modality(inputs, supported_modalities=supported)
    if modality not in supported:
        raise_unsupported_modality_error(inputs, modality, supported, module_name)
    return modality


def _unwrap_dict(image: dict) -> Any:
    if set(image) == {"image"}:
        return image["image"]
    if set(image) <= {"bytes", "path"} and (image.get("bytes") is not None or image.get("path") is not None):
        return image["bytes"] if image.get("bytes") is not None else image["path"]
    raise ObliqueInputError(
        f"An image input given as a dict must be {{'image': ...}} (or a datasets Image {{'bytes', 'path'}}), got the "
        f"keys {sorted(image)}. Encode images and texts separately."
    )


def _open_location(location: str | os.PathLike) -> Image.Image:
    text = str(location)
    if text.startswith(_URL_PREFIXES):
        try:
            return load_remote_image(text)
        except Exception as error:  # network and decoding errors of every kind
            raise ObliqueInputError(f"Cannot load the image {text[:100]!r}: {error}") from error
    if not os.path.exists(location):
        raise ObliqueInputError(f"The image file {text!r} does not exist.")
    return _decode(location, f"the image file {text!r}")


def _decode(source: Any, description: str) -> Image.Image:
    """Decode fully (``load``), so that a truncated file fails here and not in the middle of a forward pass."""
    try:
        with Image.open(source) as handle:
            handle.load()
            return handle.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ObliqueInputError(
            f"Cannot read {description}: {error}. The file is damaged or not an image; replace or remove it."
        ) from error


def _from_array(array: torch.Tensor | np.ndarray) -> Image.Image:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ObliqueInputError(
            f"An image array must have 2 (H, W) or 3 (HWC or CHW) dimensions, got shape {tuple(array.shape)}."
        )
    pil = to_pil_image(array)
    return pil
