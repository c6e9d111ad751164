"""Named evaluation datasets, so that ``load_dataset("imagenette")`` (``--dataset imagenette``) works.

Built-in names:

============== ======================== =====================================================================
name           task                     data (relative to the data root, or ``path=``)
============== ======================== =====================================================================
imagenette     zeroshot_classification  ``imagenette/imagenette_val_224.tar`` (tar or folder of class folders)
fashion_mnist  zeroshot_classification  ``fashion_mnist/`` (``t10k-*-idx?-ubyte.gz``)
mnist          zeroshot_classification  ``mnist/`` (``t10k-*-idx?-ubyte.gz``)
flickr8k_1k    zeroshot_retrieval       ``flickr8k_1k/`` (``captions.tsv`` + an image tar or folder)
sklearn_digits zeroshot_classification  none: scikit-learn's bundled 8x8 digits (1797 images)
wds/<name>     either                   CLIP_benchmark's WebDataset export: ``clip-benchmark/wds_<name>`` on the
                                        Hub, or ``path=`` a local copy
hf:<repo>      either                   a Hugging Face dataset with image + label or caption columns
============== ======================== =====================================================================

Any other name needs ``path=``: a folder or tar archive of class folders. The data root is ``data_root=``,
else ``$ST_OBLIQUE_DATA``, else ``$ST_OBLIQUE_SHARED/data``.

Example::

    from st_oblique.data.datasets import load_dataset

    imagenette = load_dataset("imagenette", data_root="../shared/data")
    cifar10 = load_dataset("wds/cifar10")                               # online
    pets = load_dataset("my_pets", path="pets/test", max_samples=500)   # class folders
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from st_oblique.data.datasets.base import ClassificationDataset, RetrievalDataset, Task
from st_oblique.data.datasets.captions import read_captions
from st_oblique.data.datasets.huggingface import WDS_HUB_PREFIX, read_hf_dataset, read_wds
from st_oblique.data.datasets.idx import find_idx_pair, read_idx_pair
from st_oblique.data.datasets.image_folder import read_image_folder, read_image_tar

__all__ = ["DATASETS", "DatasetSpec", "default_data_root", "load_dataset", "register_dataset"]

EvalDataset = ClassificationDataset | RetrievalDataset

IMAGENETTE_CLASSES: dict[str, str] = {
    "n01440764": "tench",
    "n02102040": "English springer spaniel",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(digit) for digit in range(10)]
MNIST_TEMPLATES = ['a photo of the number: "{c}".']
"""CLIP_benchmark's template for MNIST-like digits."""


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset.

    Attributes:
        name: the registry name.
        task: ``"zeroshot_classification"`` or ``"zeroshot_retrieval"``.
        description: one line for ``--help`` and the README.
        default_path: where the data sits under the data root (None: needs no files).
        reader: ``reader(path, split) -> dataset``; ``path`` is None when ``default_path`` is None.
        template_key: the dataset's key in CLIP_benchmark's template files (missing keys fall back to imagenet1k).
    """

    name: str
    task: Task
    description: str
    default_path: str | None
    reader: Callable[[Path | None, str | None], EvalDataset]
    template_key: str | None = None


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add (or replace) a named dataset."""
    DATASETS[spec.name] = spec
    return spec


def default_data_root() -> Path | None:
    """``$ST_OBLIQUE_DATA``, else ``$ST_OBLIQUE_SHARED/data``, else None."""
    if os.environ.get("ST_OBLIQUE_DATA"):
        return Path(os.environ["ST_OBLIQUE_DATA"])
    if os.environ.get("ST_OBLIQUE_SHARED"):
        return Path(os.environ["ST_OBLIQUE_SHARED"]) / "data"
    return None


def load_dataset(
    name: str,
    path: str | Path | None = None,
    *,
    data_root: str | Path | None = None,
    split: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> EvalDataset:
    """Load a named dataset (see the module docstring), or class folders at ``path`` under any name.

    Args:
        name: a registry name, ``wds/<name>``, ``hf:<repo>``, or any name with ``path=``.
        path: where the data is (overrides the registry's location under ``data_root``).
        data_root: the folder holding the datasets' folders.
        split: the split, where the format has several (default: the evaluation split).
        max_samples: keep a random subset of this many images (fixed ``seed``), e.g. for a quick check.

    Raises:
        FileNotFoundError: the data is not where it was looked for (the message says where and how to point to it).
        KeyError: an unknown name without ``path``.
    """
    if name.startswith("wds/"):
        data = read_wds(path or WDS_HUB_PREFIX + name[4:].replace("/", "-"), split or "test", name=name)
    elif name.startswith("hf:"):
        data = read_hf_dataset(str(path or name[3:]), split or "test", name=name)
    elif name in DATASETS:
        spec = DATASETS[name]
        data = spec.reader(_resolve(spec, path, data_root), split)
        data.name = name
        if isinstance(data, ClassificationDataset) and data.template_key is None:
            data.template_key = spec.template_key or name
    elif path is not None:
        data = _read_class_folders(Path(path), split)
        data.name = name
    else:
        known = ", ".join([*sorted(DATASETS), "wds/<name>", "hf:<repo>"])
        raise KeyError(f"Unknown dataset {name!r}. Known: {known}; or give a folder/tar of class folders with path=.")
    return data.subset(max_samples, seed)


def _resolve(spec: DatasetSpec, path: str | Path | None, data_root: str | Path | None) -> Path | None:
    if spec.default_path is None:
        return Path(path) if path else None
    if path is not None:
        resolved = Path(path)
    else:
        root = Path(data_root) if data_root else default_data_root()
        if root is None:
            raise FileNotFoundError(
                f"Where is {spec.name}? Pass its location (--dataset-path / path=) or a data root holding "
                f"{spec.default_path} (--data-root / data_root= / $ST_OBLIQUE_DATA)."
            )
        resolved = root / spec.default_path
    if not resolved.exists():
        raise FileNotFoundError(
            f"{spec.name} not found at {resolved} (expected {spec.default_path}); pass its location."
        )
    return resolved


def _read_class_folders(path: Path, split: str | None, classnames=None) -> ClassificationDataset:
    if path.is_dir():
        return read_image_folder(path, split=split, classnames=classnames)
    return read_image_tar(path, split=split, classnames=classnames)


def _read_imagenette(path: Path, split: str | None) -> ClassificationDataset:
    if path.is_dir() and not any(child.is_dir() for child in path.iterdir()):
        tars = sorted(path.glob("*.tar"))
        if len(tars) != 1:
            raise FileNotFoundError(f"Expected one Imagenette tar archive in {path}, found {[t.name for t in tars]}.")
        path = tars[0]
    return _read_class_folders(path, split, classnames=IMAGENETTE_CLASSES)


def _idx_reader(
    classnames: list[str], templates: list[str] | None = None
) -> Callable[[Path, str | None], ClassificationDataset]:
    def read(path: Path, split: str | None) -> ClassificationDataset:
        images, labels = find_idx_pair(path, split or "t10k")
        data = read_idx_pair(images, labels, classnames=classnames, name=path.name)
        data.templates = templates
        return data

    return read


def _read_flickr(path: Path, split: str | None) -> RetrievalDataset:
    tables = [path / name for name in ("captions.tsv", "captions.csv") if (path / name).is_file()]
    if not tables:
        raise FileNotFoundError(f"No captions.tsv in {path} (Flickr layout: captions.tsv + images tar or folder).")
    tars = sorted(path.glob("*.tar"))
    images = tars[0] if len(tars) == 1 else path
    return read_captions(tables[0], images, name=path.name)


def _read_sklearn_digits(path: Path | None, split: str | None) -> ClassificationDataset:
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 grey levels -> 0..255
    return ClassificationDataset(
        name="sklearn_digits",
        images=images,
        labels=digits.target.astype(int).tolist(),
        classnames=DIGIT_CLASSES,
        templates=MNIST_TEMPLATES,
    )


for _spec in (
    DatasetSpec(
        "imagenette",
        "zeroshot_classification",
        "Imagenette validation set: 3925 ImageNet photos of 10 classes",
        "imagenette/imagenette_val_224.tar",
        _read_imagenette,
        "imagenet1k",
    ),
    DatasetSpec(
        "fashion_mnist",
        "zeroshot_classification",
        "Fashion-MNIST test set: 10,000 28x28 grey images of 10 clothing classes",
        "fashion_mnist",
        _idx_reader(FASHION_MNIST_CLASSES),
    ),
    DatasetSpec(
        "mnist",
        "zeroshot_classification",
        "MNIST test set: 10,000 28x28 grey digits",
        "mnist",
        _idx_reader(DIGIT_CLASSES, MNIST_TEMPLATES),
        "mnist",
    ),
    DatasetSpec(
        "flickr8k_1k",
        "zeroshot_retrieval",
        "1000 Flickr8k photos with 5 captions each",
        "flickr8k_1k",
        _read_flickr,
    ),
    DatasetSpec(
        "sklearn_digits",
        "zeroshot_classification",
        "scikit-learn's bundled 8x8 digits (1797 images; no download)",
        None,
        _read_sklearn_digits,
        "mnist",
    ),
):
    register_dataset(_spec)
