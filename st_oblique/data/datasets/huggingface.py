"""Evaluation sets from Hugging Face ``datasets``: any image dataset with a label or caption column, and
CLIP_benchmark's WebDataset exports (the ``clip-benchmark/wds_*`` repositories on the Hub, or a local copy).

A WebDataset export is ``root/{split}/*.tar`` (samples ``<key>.{webp,png,jpg}`` + ``<key>.cls`` or
``<key>.txt`` with one caption per line) plus ``classnames.txt``, ``zeroshot_classification_templates.txt``
and ``dataset_type.txt`` (``retrieval`` for captioned images). ``root`` is a local folder or a Hub dataset id.

Example::

    from st_oblique.data.datasets.huggingface import read_hf_dataset, read_wds

    cifar10 = read_wds("clip-benchmark/wds_cifar10", split="test")     # online; offline: a local copy of the repo
    pets = read_hf_dataset("timm/oxford-iiit-pet", split="test")        # image + ClassLabel columns
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from st_oblique.data.datasets.base import ClassificationDataset, RetrievalDataset

__all__ = ["WDS_HUB_PREFIX", "from_hf_dataset", "read_hf_dataset", "read_wds"]

WDS_HUB_PREFIX = "clip-benchmark/wds_"
"""CLIP_benchmark's ``wds/<name>`` datasets live in the Hub repositories ``clip-benchmark/wds_<name>``."""

_IMAGE_KEYS = ("webp", "png", "jpg", "jpeg", "image", "img")
_CAPTION_KEYS = ("txt", "caption", "captions", "text", "sentences")


class HFColumn(Sequence):
    """One column of a ``datasets.Dataset``, read row by row (images stay encoded until decoded in a worker)."""

    def __init__(self, dataset: datasets.Dataset, column: str) -> None:
        if isinstance(dataset.features[column], datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        self.dataset = dataset.select_columns([column])
        self.column = column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(index)][self.column]


def from_hf_dataset(
    dataset: datasets.Dataset,
    *,
    name: str,
    image_column: str | None = None,
    label_column: str | None = None,
    caption_column: str | None = None,
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    task: str | None = None,
) -> ClassificationDataset | RetrievalDataset:
    """Wrap a ``datasets.Dataset`` of images with labels (classification) or captions (retrieval).

    Columns are found automatically when not given: the first ``Image`` feature (or a ``webp``/``png``/``jpg``
    column), the first ``ClassLabel`` (or ``cls``/``label``) column, a caption column (``txt``, ``caption``,
    ``captions``, ...; a string holds one caption per line). Class names come from the ``ClassLabel`` feature
    unless given.

    Args:
        task: ``"zeroshot_classification"`` or ``"zeroshot_retrieval"``; default: retrieval when there is a
            caption column and no label column.
    """
    features = dataset.features
    image_column = image_column or _find(features, _IMAGE_KEYS, datasets.Image)
    if image_column is None:
        raise ValueError(f"{name}: no image column among {list(features)}; pass image_column=.")
    label_column = label_column or _find(features, ("cls", "label", "labels"), datasets.ClassLabel)
    caption_column = caption_column or _find(features, _CAPTION_KEYS, None)
    if task is None:
        task = "zeroshot_retrieval" if caption_column and not label_column else "zeroshot_classification"
    images = HFColumn(dataset, image_column)
    if task == "zeroshot_retrieval":
        if caption_column is None:
            raise ValueError(f"{name}: no caption column among {list(features)}; pass caption_column=.")
        captions = [_caption_list(value) for value in dataset[caption_column]]
        return RetrievalDataset(name=name, images=images, captions=captions)
    if label_column is None:
        raise ValueError(f"{name}: no label column among {list(features)}; pass label_column=.")
    if classnames is None:
        feature = features[label_column]
        if not isinstance(feature, datasets.ClassLabel):
            raise ValueError(f"{name}: the label column {label_column!r} has no class names; pass classnames=.")
        classnames = feature.names
    return ClassificationDataset(
        name=name,
        images=images,
        labels=[int(label) for label in dataset[label_column]],
        classnames=list(classnames),
        templates=list(templates) if templates else None,
    )


def read_hf_dataset(
    path: str, split: str = "test", *, name: str | None = None, **kwargs: Any
) -> ClassificationDataset | RetrievalDataset:
    """``datasets.load_dataset(path, split=split)`` wrapped by :func:`from_hf_dataset` (keyword arguments go there).

    ``path`` is a Hub dataset id (needs the Hub or a filled local cache) or a local dataset folder.
    """
    dataset = datasets.load_dataset(path, split=split)
    return from_hf_dataset(dataset, name=name or path, **kwargs)


def read_wds(
    root: str | Path, split: str = "test", *, name: str | None = None, cache_dir: str | None = None
) -> ClassificationDataset | RetrievalDataset:
    """A CLIP_benchmark WebDataset export: a local folder, or a Hub dataset id such as ``clip-benchmark/wds_cifar10``
    (read through ``hf://`` paths, so a Hub id needs the Hub; offline, pass a local copy of the repository).

    Class names and templates come from the export's ``classnames.txt`` and
    ``zeroshot_classification_templates.txt``; ``dataset_type.txt`` says whether it is a retrieval set.
    """
    local = Path(root).is_dir()
    if local:
        shards = sorted(str(shard) for shard in (Path(root) / split).glob("*.tar"))
        if not shards:
            raise FileNotFoundError(f"No {split}/*.tar shards in {root} (CLIP_benchmark's WebDataset layout).")
    else:
        shards = [f"hf://datasets/{root}/{split}/*.tar"]
    dataset = datasets.load_dataset("webdataset", data_files={split: shards}, split=split, cache_dir=cache_dir)
    dataset_type = (_read_text(root, "dataset_type.txt", local) or "classification").strip().lower()
    classnames = _lines(_read_text(root, "classnames.txt", local))
    templates = _lines(_read_text(root, "zeroshot_classification_templates.txt", local))
    task = "zeroshot_retrieval" if dataset_type == "retrieval" else "zeroshot_classification"
    return from_hf_dataset(
        dataset,
        name=name or f"wds/{Path(str(root)).name.removeprefix('wds_')}",
        classnames=classnames or None,
        templates=templates or None,
        task=task,
    )


def _find(features: datasets.Features, names: Sequence[str], feature_type: type | None) -> str | None:
    if feature_type is not None:
        for column, feature in features.items():
            if isinstance(feature, feature_type):
                return column
    return next((column for column in names if column in features), None)


def _caption_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return _lines(value)
    return [str(caption) for caption in value]


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _read_text(root: str | Path, filename: str, local: bool) -> str | None:
    """A metadata file of a WebDataset export, or None when it does not exist."""
    if local:
        path = Path(root) / filename
        return path.read_text(encoding="utf-8") if path.is_file() else None
    try:
        return Path(hf_hub_download(str(root), filename, repo_type="dataset")).read_text(encoding="utf-8")
    except EntryNotFoundError:
        return None
