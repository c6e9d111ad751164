"""Calibration and probe inputs of an export: the texts and images its graphs are traced, calibrated and checked on.

``calibration`` (``st_oblique.export(..., calibration=...)``, ``st-oblique export --calibration``) may be:

- a list of texts, or of images (PIL images, ``{"image": ...}`` dicts);
- ``{"text": [...], "image": [...]}`` (image paths allowed there);
- a file of texts, one per line (``.txt``);
- a folder of images (``.jpg``, ``.jpeg``, ``.png``, ``.webp``, ``.bmp``);
- the name of a dataset st-oblique knows (:mod:`st_oblique.data.datasets`: ``flickr8k_1k`` gives its captions and
  photos, ``imagenette`` its photos and ``a photo of a <class>.`` texts), read from ``data_root``.

Every export also runs on :data:`PROBE_TEXTS` and a few synthetic images, so short and long texts (3 to about 200
tokens) go through the same graph before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from st_oblique.data.datasets import ClassificationDataset, load_dataset
from st_oblique.data.images import load_images
from st_oblique.errors import ObliqueInputError

__all__ = ["IMAGE_SUFFIXES", "PROBE_TEXTS", "Calibration", "probe_images", "resolve_calibration"]

Calibration = Sequence[Any] | Mapping[str, Sequence[Any]] | str | Path
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

PROBE_TEXTS: tuple[str, ...] = (
    "A dog runs.",
    "Two children are playing football in a park on a sunny afternoon.",
    "A man plays the guitar.",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "Rain.",
    "A woman slices onions in a small kitchen with a blue door, next to a window that looks out on the sea.",
    "Three people ride bicycles down a mountain road.",
    " ".join(
        ["A long caption that describes a crowded street market at dusk, with vendors selling fruit, spices and"]
        + ["bright fabrics under strings of lights, while musicians play and children chase each other"] * 12
    ),
)
"""Texts every export is checked on: from 1 word to about 200 tokens (202 for BERT's WordPiece), so short and long
sequences go through the same graph (towers with a shorter context truncate the long one)."""


def probe_images(count: int = 4, seed: int = 0) -> list[Image.Image]:
    """``count`` synthetic RGB images of different sizes and aspect ratios (noise over colour gradients), for the
    image graphs' trace and check when no calibration images are given."""
    rng = np.random.default_rng(seed)
    sizes = [(240, 320), (320, 240), (224, 224), (97, 131), (480, 360), (64, 64)]
    images = []
    for index in range(count):
        height, width = sizes[index % len(sizes)]
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 255
        noise = rng.normal(0, 40, size=(height, width, 3))
        pixels = np.clip(np.roll(base, index * 17, axis=1) + noise, 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
    return images


def resolve_calibration(
    calibration: Calibration | None, *, max_samples: int, data_root: str | Path | None = None, seed: int = 0
) -> dict[str, list[Any]]:
    """``{"text": [...], "image": [...]}`` (each at most ``max_samples``, a fixed random subset) from ``calibration``.

    Raises:
        ObliqueInputError: a file or folder that holds nothing usable, an unknown dataset name, a list mixing texts
            and images.
        FileNotFoundError: a dataset that is not under ``data_root``.
    """
    if calibration is None:
        return {}
    if isinstance(calibration, Mapping):
        unknown = sorted(set(calibration) - {"text", "image"})
        if unknown:
            raise ObliqueInputError(f"calibration has keys {unknown}; use 'text' and 'image'.")
        found = {modality: list(items) for modality, items in calibration.items() if items}
    elif isinstance(calibration, (str, Path)):
        found = _from_location(calibration, data_root)
    else:
        found = _from_list(list(calibration))
    chosen = {modality: _subset(items, max_samples, seed) for modality, items in found.items()}
    if "image" in chosen:
        # decoded once here: every reader of the model takes PIL images (paths, bytes and arrays are load_image's)
        chosen["image"] = load_images(chosen["image"])
    return chosen


def _from_list(items: list[Any]) -> dict[str, list[Any]]:
    if not items:
        return {}
    texts = [item for item in items if isinstance(item, str)]
    if len(texts) == len(items):
        return {"text": texts}
    if texts:
        raise ObliqueInputError(
            "calibration mixes texts and images; pass {'text': [...], 'image': [...]} (strings in a plain list are "
            "texts, so image paths go under 'image')."
        )
    return {"image": items}


def _from_location(location: str | Path, data_root: str | Path | None) -> dict[str, list[Any]]:
    path = Path(location).expanduser()
    if path.is_dir():
        images = sorted(str(file) for file in path.rglob("*") if file.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ObliqueInputError(
                f"The calibration folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); give a folder of images, "
                "a text file (one text per line) or a dataset name."
            )
        return {"image": images}
    if path.is_file():
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise ObliqueInputError(f"The calibration file {path} holds no text (one text per line).")
        return {"text": texts}
    try:
        data = load_dataset(str(location), data_root=data_root)
    except KeyError as error:
        raise ObliqueInputError(
            f"calibration={str(location)!r} is neither a file (texts, one per line), a folder of images nor a dataset "
            f"st-oblique knows: {error.args[0]}"
        ) from error
    if isinstance(data, ClassificationDataset):
        texts = [f"a photo of a {name}." for name in data.classnames]
    else:
        texts = [caption for group in data.captions for caption in group]
    return {"text": texts, "image": list(data.images)}


def _subset(items: list[Any], max_samples: int, seed: int) -> list[Any]:
    if len(items) <= max_samples:
        return items
    indices = np.random.default_rng(seed).choice(len(items), size=max_samples, replace=False)
    return [items[int(index)] for index in sorted(indices)]
