"""Image inputs: the one loader that turns whatever users, datasets and MTEB pass into an RGB PIL image.

Every st-oblique module that encodes images and the evaluation harness read images through :func:`load_image`,
so an image is accepted, converted and refused the same way everywhere.

Example::

    from st_oblique.data.images import load_image, load_images

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
from transformers.image_utils import load_image as load_remote_image

from st_oblique.errors import ObliqueInputError

__all__ = ["batch_modality", "check_encode_inputs", "load_image", "load_images"]

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
        ObliqueInputError (a ValueError): the file does not exist or cannot be decoded (the message names it), the
            input is not an image, has no pixels (0 x 0), or holds NaN/inf or out-of-range values.
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
    if pil.width == 0 or pil.height == 0:
        raise ObliqueInputError(f"The image is {pil.width}x{pil.height} pixels: it has no pixels to embed; drop it.")
    return pil if pil.mode == "RGB" else pil.convert("RGB")


def load_images(images: Sequence[Any]) -> list[Image.Image]:
    """:func:`load_image` for every item of a batch; an error names the input's index."""
    loaded = []
    for index, image in enumerate(images):
        try:
            loaded.append(load_image(image))
        except ObliqueInputError as error:
            raise ObliqueInputError(f"Input {index}: {error}") from error
    return loaded


def check_encode_inputs(inputs: Sequence[Any], modalities: Sequence[str]) -> list[Any]:
    """The inputs of ``encode``, checked and with ambiguous image arrays made into RGB PIL images.

    For a model that embeds images and not audio, ``(H, W)`` grey arrays (which Sentence Transformers would take
    for audio), arrays with 1 or 4 channels and arrays that are not ``(H, W, 3)`` / ``(3, H, W)`` become RGB PIL
    images exactly as :func:`load_image` converts them. Refused, naming the input's index: ``None``, images
    without pixels, arrays holding NaN or inf. The given sequence is not modified.

    Raises:
        ObliqueInputError: an input that cannot be embedded.
    """
    images = "image" in modalities
    converted = list(inputs)
    for index, item in enumerate(converted):
        if item is None:
            raise ObliqueInputError(f"Input {index} is None; pass a text or an image (drop or fill missing values).")
        if not images:
            continue
        if isinstance(item, Image.Image) and (item.width == 0 or item.height == 0):
            raise ObliqueInputError(f"Input {index}: the image is {item.width}x{item.height} pixels; drop it.")
        if isinstance(item, (torch.Tensor, np.ndarray)) and _is_image_array(item, audio="audio" in modalities):
            array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
            if _needs_conversion(array):
                try:
                    converted[index] = load_image(array)
                except ObliqueInputError as error:
                    raise ObliqueInputError(f"Input {index}: {error}") from error
            elif array.dtype.kind == "f" and not bool(np.isfinite(array).all()):
                raise ObliqueInputError(
                    f"Input {index}: the image array holds NaN or inf values; its embedding would be NaN. Fix or drop it."
                )
    return converted


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


def _is_image_array(array: torch.Tensor | np.ndarray, *, audio: bool) -> bool:
    """Whether an array passed to ``encode`` is meant as an image: 3-D, or 2-D when the model embeds no audio."""
    return array.ndim == 3 or (array.ndim == 2 and not audio)


def _needs_conversion(array: np.ndarray) -> bool:
    """Arrays Sentence Transformers' processors would misread: grey 2-D, 1 or 4 channels, no pixels."""
    if array.ndim != 3 or array.size == 0:
        return True
    return not (array.shape[-1] == 3 or array.shape[0] == 3)


def _from_array(array: torch.Tensor | np.ndarray) -> Image.Image:
    """An image array as a PIL image: ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with C in 1, 3, 4."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ObliqueInputError(
            f"An image array must have 2 (H, W) or 3 (HWC or CHW) dimensions, got shape {tuple(array.shape)}."
        )
    if array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.shape[-1] not in (1, 3, 4):
        raise ObliqueInputError(
            f"An image array needs 1, 3 or 4 channels first or last, got shape {tuple(array.shape)}."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ObliqueInputError(f"The image array has shape {tuple(array.shape)}: it has no pixels to embed; drop it.")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind == "f":
        if not bool(np.isfinite(array).all()):
            raise ObliqueInputError(
                "The image array holds NaN or inf values; its embedding would be NaN. Fix or drop it."
            )
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise ObliqueInputError(
                f"A float image array must hold values in [0, 1], got [{low:.4g}, {high:.4g}]; divide uint8 pixels by "
                "255 or pass a uint8 array."
            )
        array = (array * 255).astype(np.uint8)  # as transformers' to_pil_image converts floats
    elif array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ObliqueInputError(f"An integer image array must hold values in [0, 255], got [{low}, {high}].")
        array = array.astype(np.uint8)
    else:
        raise ObliqueInputError(f"Cannot use an image array of dtype {array.dtype}; pass uint8 or float values.")
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)  # L, RGB or RGBA
