"""Labelled images in the IDX format of MNIST and Fashion-MNIST (``*-images-idx3-ubyte[.gz]`` + labels file).

Example::

    from st_oblique.data.datasets.idx import read_idx_pair

    fashion = read_idx_pair("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                            classnames=["T-shirt/top", "Trouser", ...], name="fashion_mnist")
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from st_oblique.data.datasets.base import ClassificationDataset

__all__ = ["find_idx_pair", "read_idx", "read_idx_pair"]

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzip-compressed or not).

    Raises:
        ValueError: the file is not IDX (bad magic number or size).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (MNIST format): bad magic number {data[:4].hex()}.")
    num_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(num_dims))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * num_dims
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset != expected:
        raise ValueError(
            f"{path}: header announces shape {shape} ({expected} bytes) but holds {len(data) - offset} bytes."
        )
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)


def find_idx_pair(folder: str | Path, split: str = "t10k") -> tuple[Path, Path]:
    """The ``{split}-images-idx3-ubyte[.gz]`` and ``{split}-labels-idx1-ubyte[.gz]`` files of a folder."""
    folder = Path(folder)
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [folder / f"{split}-{kind}{suffix}" for suffix in (".gz", "")]
        existing = [candidate for candidate in candidates if candidate.is_file()]
        if not existing:
            raise FileNotFoundError(f"No {split}-{kind}[.gz] in {folder} (an MNIST-format folder).")
        found.append(existing[0])
    return found[0], found[1]


def read_idx_pair(
    images_path: str | Path, labels_path: str | Path, *, classnames: Sequence[str], name: str
) -> ClassificationDataset:
    """Labelled grey images from an IDX images file ``(N, H, W)`` and an IDX labels file ``(N,)``."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"Expected images (N, H, W) and labels (N,), got {images.shape} from {images_path} and {labels.shape} "
            f"from {labels_path}."
        )
    return ClassificationDataset(
        name=name, images=images, labels=labels.astype(int).tolist(), classnames=list(classnames)
    )
