"""Labelled images stored as class folders (``root/<class>/<image>``), on disk or inside a tar archive.

This is torchvision's ``ImageFolder`` layout: classes are the sorted folder names, labels their positions.
Tar archives are read in place, without extracting them (Imagenette's ``imagenette_val_224.tar`` holds
``val/<wnid>/*.JPEG``); each worker process opens its own handle.

Example::

    from st_oblique.data.datasets.image_folder import read_image_folder, read_image_tar

    pets = read_image_folder("pets/test", name="pets")
    imagenette = read_image_tar("imagenette_val_224.tar", split="val", classnames={"n01440764": "tench", ...})
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from st_oblique.data.datasets.base import ClassificationDataset

__all__ = ["IMAGE_EXTENSIONS", "TarMembers", "read_image_folder", "read_image_tar"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


class TarMembers(Sequence):
    """The encoded bytes of selected members of a tar archive, read on access.

    The archive is opened lazily and once per process, so a DataLoader worker never shares a file handle
    with its parent.
    """

    def __init__(self, path: str | Path, members: Sequence[tarfile.TarInfo]) -> None:
        self.path = str(path)
        self.members = list(members)
        self._handle: tarfile.TarFile | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index: int) -> bytes:
        if self._handle is None or self._pid != os.getpid():
            self._handle = tarfile.open(self.path)
            self._pid = os.getpid()
        extracted = self._handle.extractfile(self.members[index])
        if extracted is None:
            raise OSError(f"{self.path}: member {self.members[index].name} is not a regular file.")
        return extracted.read()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": None}


def read_image_folder(
    path: str | Path,
    *,
    split: str | None = None,
    classnames: Sequence[str] | Mapping[str, str] | None = None,
    name: str | None = None,
) -> ClassificationDataset:
    """Labelled images from ``path[/split]/<class>/<image>``.

    Args:
        path: the root folder.
        split: an optional subfolder of ``path`` holding the class folders (e.g. ``"val"``).
        classnames: display names of the classes: a list in sorted-folder order, or ``{folder: name}``;
            default: the folder names with ``_`` replaced by spaces.
        name: the dataset name (default: the folder name).
    """
    root = Path(path) / split if split else Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder not found: {root}")
    entries = [
        (directory.name, str(file))
        for directory in sorted(root.iterdir())
        if directory.is_dir()
        for file in sorted(directory.rglob("*"))
        if file.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return _from_entries(entries, classnames, name or Path(path).name, source=str(root))


def read_image_tar(
    path: str | Path,
    *,
    split: str | None = None,
    classnames: Sequence[str] | Mapping[str, str] | None = None,
    name: str | None = None,
) -> ClassificationDataset:
    """Labelled images from a tar archive of class folders (``[split/]<class>/<image>``), read in place.

    Args:
        path: the ``.tar`` file (compressed archives work but decompress on every access; prefer plain tar).
        split: the top-level folder inside the archive holding the class folders; default: the archive's single
            top-level folder when there is one (as in ``val/<class>/...``), else the archive root.
        classnames: display names: a list in sorted-folder order, or ``{folder: name}``; default: folder names.
        name: the dataset name (default: the archive's file name without extension).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Tar archive not found: {path}")
    with tarfile.open(path) as archive:
        members = [
            member
            for member in archive.getmembers()
            if member.isfile() and PurePosixPath(member.name).suffix.lower() in IMAGE_EXTENSIONS
        ]
    parts = [PurePosixPath(member.name).parts for member in members]
    if split is None:
        tops = {part[0] for part in parts if len(part) >= 3}
        split = tops.pop() if len(tops) == 1 and all(len(part) >= 3 for part in parts) else ""
    prefix = tuple(PurePosixPath(split).parts)
    chosen = [
        (part[len(prefix)], member)
        for part, member in zip(parts, members, strict=True)
        if part[: len(prefix)] == prefix and len(part) == len(prefix) + 2
    ]
    chosen.sort(key=lambda entry: (entry[0], entry[1].name))
    data = _from_entries(
        [(folder, member.name) for folder, member in chosen], classnames, name or path.name.split(".")[0], str(path)
    )
    data.images = TarMembers(path, [member for _, member in chosen])
    return data


def _from_entries(
    entries: list[tuple[str, str]],
    classnames: Sequence[str] | Mapping[str, str] | None,
    name: str,
    source: str,
) -> ClassificationDataset:
    """A ClassificationDataset from ``(class folder, image)`` pairs sorted by folder."""
    if not entries:
        raise ValueError(
            f"No images in class folders found in {source} (expected <class>/<image> with {sorted(IMAGE_EXTENSIONS)})."
        )
    folders = sorted({folder for folder, _ in entries})
    if classnames is None:
        names = [folder.replace("_", " ") for folder in folders]
    elif isinstance(classnames, Mapping):
        missing = [folder for folder in folders if folder not in classnames]
        if missing:
            raise ValueError(f"{source}: no class name given for the folders {missing[:5]}.")
        names = [classnames[folder] for folder in folders]
    else:
        if len(classnames) != len(folders):
            raise ValueError(
                f"{source} has {len(folders)} class folders but {len(classnames)} class names were given; pass "
                "one name per folder in sorted-folder order, or a {folder: name} mapping."
            )
        names = list(classnames)
    label_of = {folder: index for index, folder in enumerate(folders)}
    return ClassificationDataset(
        name=name,
        images=[item for _, item in entries],
        labels=[label_of[folder] for folder, _ in entries],
        classnames=names,
    )
