"""Training data for ``st-oblique train``: a Hugging Face dataset, a caption table with an image folder or tar,
or a table of text pairs, turned into a ``datasets.Dataset`` whose columns are the loss's inputs in order
(anchor, positive[, negatives...]).

Problems are found before training starts and reported in one sentence each (:class:`TrainingDataError`):
missing columns, an empty dataset, images that cannot be read, images for a model that only embeds text.

Example::

    from st_oblique.app.train_data import load_training_data

    data = load_training_data(captions="flickr8k_1k/captions.tsv", images="flickr8k_1k/flickr8k_1k_images_256.tar")
    data.dataset            # Dataset({features: ['image', 'caption'], num_rows: 5000})
    data.description        # "flickr8k_1k/captions.tsv + flickr8k_1k/flickr8k_1k_images_256.tar: 5000 pairs"
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from tqdm.auto import tqdm

from st_oblique.errors import TrainingDataError
from st_oblique.evaluation.datasets import read_captions

__all__ = [
    "DEFAULT_COLUMN_PAIRS",
    "TrainingData",
    "TrainingDataError",
    "check_modalities",
    "load_training_data",
    "read_caption_pairs",
    "read_text_pairs",
    "select_columns",
]

logger = logging.getLogger(__name__)

DEFAULT_COLUMN_PAIRS: tuple[tuple[str, str], ...] = (
    ("image", "caption"),
    ("image", "text"),
    ("anchor", "positive"),
    ("sentence1", "sentence2"),
    ("query", "positive"),
)
"""Column pairs used, in this order, when ``columns`` is not given and the dataset has more than two columns."""

IMAGE_CHECK_SAMPLE = 64
"""Rows of a Hugging Face dataset whose images are decoded before training (local images are all checked)."""


@dataclass
class TrainingData:
    """The loss's input columns, in order, and where they came from.

    Attributes:
        dataset: a ``datasets.Dataset`` holding exactly the loss's input columns (anchor first).
        description: one line for logs and the training report.
        image_columns: the columns that hold images.
    """

    dataset: Any
    description: str
    image_columns: list[str]

    @property
    def columns(self) -> list[str]:
        return list(self.dataset.column_names)


def load_training_data(
    *,
    dataset: str | None = None,
    dataset_config: str | None = None,
    split: str = "train",
    captions: str | Path | None = None,
    images: str | Path | None = None,
    pairs: str | Path | None = None,
    columns: Sequence[str] = (),
    max_samples: int | None = None,
    show_progress_bar: bool = True,
) -> TrainingData:
    """Load the training data from exactly one source.

    Args:
        dataset: a Hugging Face dataset id, a local dataset folder (``Dataset.save_to_disk`` or files
            ``datasets.load_dataset`` reads), used with ``dataset_config`` and ``split``.
        captions, images: a caption table (``.tsv``/``.csv`` with a header; Flickr8k layout ``image``,
            ``caption_idx``, ``caption``) and the folder or tar archive holding its images. Every caption of an
            image becomes one (image, caption) pair.
        pairs: a ``.tsv``/``.csv`` table of text pairs with a header row.
        columns: the loss's input columns in order (anchor, positive[, negatives]). For a caption table: its image
            and caption column names. Default: the only two columns, else the first of
            :data:`DEFAULT_COLUMN_PAIRS` present.
        max_samples: keep the first ``max_samples`` rows.
        show_progress_bar: show progress while checking local images.

    Raises:
        TrainingDataError: no or several sources, missing files or columns, no rows, unreadable images.
    """
    given = [name for name, value in (("dataset", dataset), ("captions", captions), ("pairs", pairs)) if value]
    if len(given) != 1:
        raise TrainingDataError(
            "Give the training data in one way: --dataset (a Hugging Face dataset id or folder), --captions with "
            f"--images (a caption table and its images) or --pairs (a table of text pairs); got {given or 'none'}."
        )
    if images and not captions:
        raise TrainingDataError("--images needs --captions (the table that names the images and their captions).")
    if dataset:
        data = _read_dataset(dataset, dataset_config, split)
        source = f"{dataset}{f' ({dataset_config})' if dataset_config else ''} [{split}]"
        data = select_columns(data, columns, source)
    elif captions:
        if not images:
            raise TrainingDataError("--captions needs --images: the folder or tar archive holding the images.")
        image_column, caption_column = _caption_columns(columns)
        data = read_caption_pairs(
            captions, images, image_column=image_column, caption_column=caption_column, show_progress_bar=show_progress_bar
        )
        source = f"{captions} + {images}"
    else:
        data = select_columns(read_text_pairs(pairs), columns, str(pairs))
        source = str(pairs)
    if max_samples is not None:
        data = data.select(range(min(max_samples, len(data))))
    if len(data) == 0:
        raise TrainingDataError(f"The training data {source} has no rows; check the file, the split or --max-train-samples.")
    image_columns = _image_columns(data)
    if dataset and image_columns:
        _check_decodable(data, image_columns, source)
    return TrainingData(data, f"{source}: {len(data)} rows, columns {data.column_names}", image_columns)


def check_modalities(data: TrainingData, modalities: Sequence[str]) -> None:
    """Raise :class:`TrainingDataError` if ``data`` has image columns and the model embeds only text."""
    if data.image_columns and "image" not in modalities:
        raise TrainingDataError(
            f"The column(s) {data.image_columns} of the training data hold images, but this backbone embeds only "
            "text; use an image-text backbone (--backbone clip, open_clip or dual) or text columns."
        )


def select_columns(data: Any, columns: Sequence[str], source: str) -> Any:
    """``data`` with only the loss's input columns, in order (see :func:`load_training_data`)."""
    available = list(data.column_names)
    if columns:
        missing = [column for column in columns if column not in available]
        if missing:
            raise TrainingDataError(
                f"{source} has no column(s) {missing}; its columns are {available}. Pass existing ones with --columns."
            )
        if len(columns) < 2:
            raise TrainingDataError(f"--columns needs at least two columns (anchor, positive), got {list(columns)}.")
        chosen = list(columns)
    elif len(available) == 2:
        chosen = available
    else:
        chosen = next((list(pair) for pair in DEFAULT_COLUMN_PAIRS if set(pair) <= set(available)), None)
        if chosen is None:
            raise TrainingDataError(
                f"Which columns of {source} should be trained on? It has {available}; pass --columns ANCHOR POSITIVE."
            )
    return data.select_columns(chosen)


def read_caption_pairs(
    captions: str | Path,
    images: str | Path,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    show_progress_bar: bool = True,
) -> Any:
    """(image, caption) pairs from a caption table and an image folder or tar, every image checked to decode.

    Returns:
        A ``datasets.Dataset`` with an ``Image()`` column ``image`` and a string column ``caption``, one row per
        caption.

    Raises:
        TrainingDataError: the table or the images are missing, the table lacks the columns, or images cannot be read.
    """


    try:
        table = read_captions(captions, images, image_column=image_column, caption_column=caption_column)
    except FileNotFoundError as error:
        raise TrainingDataError(str(error)) from error
    except ValueError as error:
        raise TrainingDataError(f"{error} Name them with --columns IMAGE_COLUMN CAPTION_COLUMN." if "columns" in str(error) else str(error)) from error
    names = _image_names(table.images)
    encoded = _read_and_check_images(table.images, names, str(captions), show_progress_bar)
    rows_images, rows_captions = [], []
    for image, name, image_captions in zip(encoded, names, table.captions, strict=True):
        for caption in image_captions:
            rows_images.append({"bytes": image, "path": name})
            rows_captions.append(caption)
    features = Features({"image": ImageFeature(), "caption": Value("string")})
    return Dataset.from_dict({"image": rows_images, "caption": rows_captions}, features=features)


def read_text_pairs(path: str | Path) -> Any:
    """A table of texts (``.tsv``, else comma-separated) with a header row, as a ``datasets.Dataset`` of strings.

    Raises:
        TrainingDataError: the file is missing, has no header, or a row has the wrong number of fields.
    """

    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"Text pair table not found: {path}")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        header = next(reader, None)
        if not header:
            raise TrainingDataError(f"{path} is empty; it needs a header row naming its columns, then one pair per row.")
        rows = []
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise TrainingDataError(
                    f"{path}, line {line_number}: {len(row)} fields where the header has {len(header)} ({header})."
                )
            rows.append(row)
    return Dataset.from_dict({name: [row[index] for row in rows] for index, name in enumerate(header)})


def _caption_columns(columns: Sequence[str]) -> tuple[str, str]:
    if not columns:
        return "image", "caption"
    if len(columns) != 2:
        raise TrainingDataError(
            f"With --captions, --columns names the table's image and caption columns (two), got {list(columns)}."
        )
    return columns[0], columns[1]


def _read_dataset(name: str, config: str | None, split: str) -> Any:

    path = Path(name).expanduser()
    try:
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise TrainingDataError(f"{name} has no split {split!r}; its splits are {list(loaded)} (--split).")
                loaded = loaded[split]
            return loaded
        return datasets.load_dataset(name, config, split=split)
    except TrainingDataError:
        raise
    except FileNotFoundError as error:
        raise TrainingDataError(
            f"Cannot find the dataset {name!r}: {_first_line(error)}. Give a Hugging Face dataset id (online) or a "
            "local dataset folder."
        ) from error
    except (ValueError, ConnectionError, OSError) as error:
        raise TrainingDataError(f"Cannot load the dataset {name!r} (split {split!r}): {_first_line(error)}") from error


def _image_columns(data: Any) -> list[str]:

    return [name for name, feature in data.features.items() if isinstance(feature, ImageFeature)]


def _check_decodable(data: Any, columns: list[str], source: str) -> None:
    """Decode the images of the first rows of a (possibly huge) dataset; broken files fail here, not mid-training."""
    sample = data.select(range(min(IMAGE_CHECK_SAMPLE, len(data))))
    for column in columns:
        for index in range(len(sample)):
            try:
                sample[index][column].load()
            except Exception as error:
                raise TrainingDataError(
                    f"Row {index} of {source} has an image in {column!r} that cannot be read ({_first_line(error)}); "
                    "fix or drop such rows."
                ) from error


def _image_names(images: Sequence[Any]) -> list[str]:
    members = getattr(images, "members", None)
    if members is not None:  # a tar archive
        return [member.name for member in members]
    return [str(image) for image in images]


def _read_and_check_images(images: Sequence[Any], names: list[str], table: str, show_progress_bar: bool) -> list[bytes]:
    """The encoded bytes of every image, each verified to be a readable image file."""

    encoded, broken = [], []
    for index in tqdm(range(len(images)), desc="Checking images", disable=not show_progress_bar, unit="image"):
        item = images[index]
        try:
            data = Path(item).read_bytes() if isinstance(item, (str, Path)) else bytes(item)
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
        except Exception as error:
            reason = "not an image file PIL can read" if type(error).__name__ == "UnidentifiedImageError" else _first_line(error)
            broken.append(f"{names[index]} ({reason})")
            continue
        encoded.append(data)
    if broken:
        raise TrainingDataError(
            f"{len(broken)} of {len(images)} images named in {table} cannot be read, e.g. {broken[0]}; replace them or "
            "remove their rows from the table."
        )
    return encoded


def _first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of ``error``'s message without a final period (messages append their own), at most ``limit``
    characters."""
    text = str(error).strip() or type(error).__name__
    line = text.splitlines()[0].rstrip(".")
    return line if len(line) <= limit else line[: limit - 3] + "..."
