"""Captioned images from a caption table (TSV/CSV with ``image`` and ``caption`` columns) plus an image folder or
tar archive, as in the Flickr8k layout (``captions.tsv``: image, caption_idx, caption).

Images keep the order of their first caption in the table; captions keep the table's order (sorted by a
``caption_idx`` column when there is one).

Example::

    from st_oblique.data.datasets.captions import read_captions

    flickr = read_captions("flickr8k_1k/captions.tsv", "flickr8k_1k/flickr8k_1k_images_256.tar", name="flickr8k_1k")
"""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path, PurePosixPath

from st_oblique.data.datasets.base import RetrievalDataset
from st_oblique.data.datasets.image_folder import IMAGE_EXTENSIONS, TarMembers
from st_oblique.errors import ObliqueInputError

__all__ = ["CaptionTableColumnsError", "header_looks_like_data", "read_captions", "read_table"]


class CaptionTableColumnsError(ObliqueInputError):
    """A caption table without the image and caption columns; ``header_is_data`` when its first row is a data row
    (a file name, a sentence), so that the fix is a header row, not other column names."""

    def __init__(self, path: Path, columns: list[str], image_column: str, caption_column: str, delimiter: str) -> None:
        reason = header_looks_like_data(columns)
        self.header_is_data = reason is not None
        if reason:
            separator = "<TAB>" if delimiter == "\t" else ","
            layout = separator.join(["image", "caption_idx", "caption"] if len(columns) == 3 else ["image", "caption"])
            message = (
                f"The first row of {path} looks like data, not a header ({reason}): add a header "
                f"row `{layout}` as its first line."
            )
        else:
            message = (
                f"{path} needs columns {image_column!r} and {caption_column!r}, found {columns}; rename them in its "
                "header row."
            )
        super().__init__(message)


def header_looks_like_data(columns: list[str]) -> str | None:
    """Why a table's header row looks like a data row (``"'1000268201.jpg' is a file name"``, ``"'a dog runs' is a
    sentence"``), or None: a column name has neither an image extension nor several words."""
    for cell in columns:
        if PurePosixPath(cell.strip()).suffix.lower() in IMAGE_EXTENSIONS:
            return f"{cell!r} is a file name"
        if len(cell.split()) >= 3:
            return f"{cell!r} is a sentence"
    return None


def read_captions(
    captions_path: str | Path,
    images_path: str | Path,
    *,
    name: str | None = None,
    image_column: str = "image",
    caption_column: str = "caption",
) -> RetrievalDataset:
    """Captioned images.

    Args:
        captions_path: a ``.tsv`` (tab-separated) or ``.csv`` table with a header row.
        images_path: a folder or a tar archive holding the images; the table's image names are matched to file
            names (anywhere in the folder or archive).
        name: the dataset name (default: the table's folder name).
        image_column, caption_column: the table's column names.

    Raises:
        CaptionTableColumnsError: the table lacks the columns (or has no header row).
        ValueError: images named in the table that are not in ``images_path``.
    """
    captions_path, images_path = Path(captions_path), Path(images_path)
    groups = _read_table(captions_path, image_column, caption_column)
    names = list(groups)
    if images_path.is_dir():
        files = {file.name: str(file) for file in images_path.rglob("*") if file.suffix.lower() in IMAGE_EXTENSIONS}
        missing = [image for image in names if image not in files]
        images = [files.get(image) for image in names]
    elif images_path.is_file():
        with tarfile.open(images_path) as archive:
            members = {PurePosixPath(m.name).name: m for m in archive.getmembers() if m.isfile()}
        missing = [image for image in names if image not in members]
        images = TarMembers(images_path, [members[image] for image in names if image in members])
    else:
        raise FileNotFoundError(f"Images not found: {images_path} (a folder or a tar archive).")
    if missing:
        raise ValueError(
            f"{len(missing)} images named in {captions_path} are not in {images_path}, e.g. {missing[:3]}."
        )
    return RetrievalDataset(name=name or captions_path.parent.name, images=images, captions=[groups[n] for n in names])


def read_table(path: str | Path, *, what: str = "Table") -> tuple[list[str], list[dict[str, str]]]:
    """``(columns, rows)`` of a ``.tsv`` (tab-separated, no quoting: the Flickr8k layout) or ``.csv`` table with a
    header row.

    Raises:
        FileNotFoundError: ``path`` is not a file (the message starts with ``what``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(
            handle, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        )
        return list(reader.fieldnames or []), list(reader)


def _read_table(path: Path, image_column: str, caption_column: str) -> dict[str, list[str]]:
    """``{image: [captions]}`` in first-appearance order."""
    columns, rows = read_table(path, what="Caption table")
    if image_column not in columns or caption_column not in columns:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        raise CaptionTableColumnsError(path, columns, image_column, caption_column, delimiter)
    order_column = "caption_idx" if "caption_idx" in columns else None
    groups: dict[str, list[tuple[int, str]]] = {}
    for position, row in enumerate(rows):
        order = int(row[order_column]) if order_column else position
        groups.setdefault(row[image_column], []).append((order, row[caption_column].strip()))
    return {image: [caption for _, caption in sorted(entries)] for image, entries in groups.items()}
