"""What the search app searches: the image files of a folder, and/or the captions (or sentences) of a table.

Images are kept as POSIX paths relative to their folder (the app serves them from there, and only them); captions
keep the table's order, each with its image (relative to the same folder) when the table names one.

Example::

    from st_oblique.app.search_app.corpus import corpus_from_captions, corpus_from_folder

    photos = corpus_from_folder("~/Pictures/holiday")                          # every image under the folder
    flickr = corpus_from_captions("captions.tsv", images_root="flickr_images")  # captions + the images they name
    sentences = corpus_from_captions("sentences.csv", caption_column="text")    # text-only: text <-> text search
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from st_oblique.app.text_table import read_table, text_column
from st_oblique.data.datasets.captions import read_captions
from st_oblique.data.datasets.image_folder import IMAGE_EXTENSIONS
from st_oblique.errors import ObliqueConfigError

__all__ = ["Caption", "SearchCorpus", "corpus_from_captions", "corpus_from_folder", "list_image_files"]


@dataclass(frozen=True)
class Caption:
    """One row of a caption table.

    Attributes:
        text: the caption (or sentence).
        image: its image: a path relative to the corpus's ``images_root`` when there is one, else the name the table
            gives (shown, not served), or None.
    """

    text: str
    image: str | None = None


@dataclass
class SearchCorpus:
    """The searchable items.

    Attributes:
        images_root: the folder the images are read and served from (None: no images).
        images: image files under ``images_root``, as relative POSIX paths, in a fixed order.
        captions: the captions, in the table's order.
        captions_table: the table they come from (None: no captions).
        caption_column: the table's column the captions were read from.
    """

    images_root: Path | None = None
    images: list[str] = field(default_factory=list)
    captions: list[Caption] = field(default_factory=list)
    captions_table: Path | None = None
    caption_column: str | None = None

    def image_path(self, relative: str) -> Path:
        """The file of one of ``images``."""
        if self.images_root is None:
            raise ValueError("This corpus has no image folder.")
        return self.images_root / relative

    def describe(self) -> str:
        """``"40 images in photos/, 200 captions of captions.tsv"``."""
        parts = []
        if self.images:
            parts.append(f"{len(self.images)} images in {self.images_root}")
        if self.captions:
            parts.append(f"{len(self.captions)} captions of {self.captions_table} (column {self.caption_column!r})")
        return ", ".join(parts)


def list_image_files(root: str | Path) -> list[str]:
    """The image files under ``root`` (any depth; extensions of
    :data:`~st_oblique.data.datasets.image_folder.IMAGE_EXTENSIONS`) as sorted relative POSIX paths.

    Hidden files and folders (a name starting with ``.``) are left out, and so are symbolic links that lead outside
    ``root``: the app serves only what lies inside the folder.
    """
    root = Path(root).expanduser().resolve()
    files = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if not path.is_file() or not path.resolve().is_relative_to(root):
            continue
        files.append(relative.as_posix())
    return sorted(files)


def corpus_from_folder(images: str | Path) -> SearchCorpus:
    """Every image under the folder ``images``.

    Raises:
        ObliqueConfigError: ``images`` is not a folder (a tar archive must be extracted first) or holds no images.
    """
    root = _image_folder(images, "--images")
    files = list_image_files(root)
    if not files:
        raise ObliqueConfigError(
            f"--images {images}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under this folder."
        )
    return SearchCorpus(images_root=root, images=files)


def corpus_from_captions(
    table: str | Path,
    *,
    images_root: str | Path | None = None,
    caption_column: str | None = None,
    image_column: str = "image",
) -> SearchCorpus:
    """The captions of ``table`` and, with ``images_root``, the images they name.

    Args:
        table: a ``.tsv``/``.csv`` table with a header row (the Flickr8k layout: ``image``, ``caption_idx``,
            ``caption``; a text-only table needs only its text column).
        images_root: the folder holding the table's images (matched by file name, at any depth); without it the
            search is text <-> text over the captions.
        caption_column: the text column (default: ``caption``, ``text``, ``sentence``, ... whichever the table has).
        image_column: the image column (needed with ``images_root``).

    Raises:
        ObliqueConfigError: a missing column, an empty table, ``images_root`` not a folder.
        ValueError: images named in the table that are not in ``images_root``.
    """
    table = Path(table).expanduser().resolve()
    columns, rows = read_table(table)
    column = text_column(columns, caption_column)
    if column is None:
        raise ObliqueConfigError(
            f"--caption-column {caption_column!r}: {table} has the columns {columns}; name one of them."
        )
    if images_root is None:
        captions = [
            Caption(text=text, image=(row.get(image_column) or None))
            for row in rows
            if (text := (row.get(column) or "").strip())
        ]
        images: list[str] = []
        root = None
    else:
        root = _image_folder(images_root, "--images-root")
        data = read_captions(table, root, image_column=image_column, caption_column=column)
        images = [Path(path).relative_to(root).as_posix() for path in data.images]
        captions = [
            Caption(text=text, image=image)
            for image, texts in zip(images, data.captions, strict=True)
            for text in texts
            if text
        ]
    if not captions:
        raise ObliqueConfigError(f"--captions {table}: column {column!r} holds no text.")
    return SearchCorpus(images_root=root, images=images, captions=captions, captions_table=table, caption_column=column)


def _image_folder(path: str | Path, option: str) -> Path:
    folder = Path(path).expanduser()
    if folder.is_file():
        raise ObliqueConfigError(
            f"{option} {path}: a file, not a folder. The app serves the images from a folder; extract an archive "
            f"first (e.g. `mkdir photos && tar -xf {PurePosixPath(str(path)).name} -C photos`)."
        )
    if not folder.is_dir():
        raise ObliqueConfigError(f"{option} {path}: no such folder.")
    return folder.resolve()
