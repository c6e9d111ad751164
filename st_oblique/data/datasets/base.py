"""The two dataset shapes the zero-shot harness evaluates: labelled images and captioned images.

Images are held as a lazy sequence (``len`` and indexing) of anything
:func:`st_oblique.data.images.load_image` reads (paths, encoded bytes, arrays, PIL images), so a
dataset of thousands of photos costs no memory until a batch is encoded.

Example::

    from st_oblique.data.datasets import ClassificationDataset

    data = ClassificationDataset("toy", images=["a.jpg", "b.jpg"], labels=[0, 1], classnames=["cat", "dog"])
    small = data.subset(1)   # one image, drawn with a fixed seed
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np

from st_oblique.data.templates import Templates
from st_oblique.validators import check_positive_int

__all__ = ["ClassificationDataset", "RetrievalDataset", "SubsetView", "Task", "sample_indices"]

Task = Literal["zeroshot_classification", "zeroshot_retrieval"]


class SubsetView(Sequence):
    """The items of ``items`` at ``indices``, read on access."""

    def __init__(self, items: Sequence[Any], indices: Sequence[int]) -> None:
        self.items = items
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, slice):
            return SubsetView(self.items, self.indices[index])
        return self.items[self.indices[index]]


def sample_indices(total: int, max_samples: int | None, seed: int) -> list[int] | None:
    """Sorted random indices of ``max_samples`` items, or None when the whole set is kept."""
    if max_samples is None or max_samples >= total:
        return None
    check_positive_int(max_samples, name="max_samples")
    return sorted(np.random.default_rng(seed).choice(total, size=max_samples, replace=False).tolist())


class _PerImageSubset:
    """``subset()`` for datasets whose field ``per_image`` holds one entry per image (labels or caption lists)."""

    per_image: str
    images: Sequence[Any]

    def __len__(self) -> int:
        return len(getattr(self, self.per_image))

    def subset(self, max_samples: int | None, seed: int = 0):
        """A random subset of at most ``max_samples`` images with their labels or captions (fixed seed; the whole
        set when None)."""
        indices = sample_indices(len(self), max_samples, seed)
        if indices is None:
            return self
        entries = getattr(self, self.per_image)
        return replace(self, images=SubsetView(self.images, indices), **{self.per_image: [entries[i] for i in indices]})


@dataclass
class ClassificationDataset(_PerImageSubset):
    """Labelled images for zero-shot classification.

    Attributes:
        name: the dataset's name (CLIP_benchmark's when it has one, e.g. ``"imagenette"``, ``"wds/cifar10"``).
        images: N images, read lazily.
        labels: N integer labels in ``[0, C)``.
        classnames: the C class names, in label order.
        templates: the dataset's own templates (``None``: the harness default, OpenAI's ImageNet templates).
        template_key: the key of this dataset in CLIP_benchmark's template files (falls back to ``imagenet1k``).
    """

    name: str
    images: Sequence[Any]
    labels: list[int]
    classnames: list[str]
    templates: Templates | None = None
    template_key: str | None = None
    task: Task = field(default="zeroshot_classification", init=False)
    per_image: ClassVar[str] = "labels"

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels.")
        if self.labels and not 0 <= min(self.labels) <= max(self.labels) < len(self.classnames):
            raise ValueError(
                f"{self.name}: labels range over [{min(self.labels)}, {max(self.labels)}] but there are "
                f"{len(self.classnames)} class names."
            )


@dataclass
class RetrievalDataset(_PerImageSubset):
    """Images with one or more captions each, for zero-shot retrieval.

    Attributes:
        name: the dataset's name (e.g. ``"flickr8k_1k"``).
        images: N images, read lazily.
        captions: N non-empty lists of captions.
    """

    name: str
    images: Sequence[Any]
    captions: list[list[str]]
    task: Task = field(default="zeroshot_retrieval", init=False)
    per_image: ClassVar[str] = "captions"

    def __post_init__(self) -> None:
        if len(self.images) != len(self.captions):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.captions)} caption lists.")
        empty = [index for index, group in enumerate(self.captions) if not group]
        if empty:
            raise ValueError(f"{self.name}: images {empty[:5]} have no caption.")
