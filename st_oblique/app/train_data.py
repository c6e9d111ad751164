"""Training data for ``st-oblique train``: a Hugging Face dataset (also streamed), WebDataset tar shards, a caption
table with an image folder or tar, or a table of text pairs, turned into a ``datasets.Dataset`` (or, streamed, a
``datasets.IterableDataset`` read shard by shard, never held in memory) whose columns are the loss's inputs in
order (anchor, positive[, negatives...]).

Problems are found before training starts and reported in one sentence each (:class:`TrainingDataError`):
missing columns, an empty dataset, images that cannot be read, images for a model that only embeds text.

Example::

    from st_oblique.app.train_data import load_training_data

    data = load_training_data(captions="flickr8k_1k/captions.tsv", images="flickr8k_1k/flickr8k_1k_images_256.tar")
    data.dataset            # Dataset({features: ['image', 'caption'], num_rows: 5000})
    data.description        # "flickr8k_1k/captions.tsv + flickr8k_1k/flickr8k_1k_images_256.tar: 5000 pairs"

    shards = load_training_data(shards="data/{00000..00009}.tar")  # img2dataset / open_clip layout, streamed
    shards.dataset          # IterableDataset({features: ['jpg', 'txt'], num_shards: 10})
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import braceexpand
import datasets
from datasets import Dataset, Features, IterableDataset, Value
from datasets import Image as ImageFeature
from PIL import Image
from tqdm.auto import tqdm

from st_oblique.builders.families import BACKBONE_FAMILIES
from st_oblique.data.datasets import read_captions
from st_oblique.data.datasets.captions import CaptionTableColumnsError, header_looks_like_data
from st_oblique.errors import TrainingDataError, one_line

__all__ = [
    "DEFAULT_COLUMN_PAIRS",
    "TrainingData",
    "TrainingDataError",
    "check_modalities",
    "expand_shards",
    "load_training_data",
    "read_caption_pairs",
    "read_text_pairs",
    "read_webdataset_shards",
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

WEBDATASET_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
"""File extensions of a WebDataset sample's image, in the order they are looked for (img2dataset writes ``jpg``)."""
WEBDATASET_TEXT_KEYS = ("txt", "caption", "text")


@dataclass
class TrainingData:
    """The loss's input columns, in order, and where they came from.

    Attributes:
        dataset: a ``datasets.Dataset`` (or, streamed, a ``datasets.IterableDataset``) holding exactly the loss's
            input columns (anchor first).
        description: one line for logs and the training report.
        image_columns: the columns that hold images.
    """

    dataset: Any
    description: str
    image_columns: list[str]

    @property
    def columns(self) -> list[str]:
        return list(self.dataset.column_names)

    @property
    def streaming(self) -> bool:
        """Whether the data is read as it is used (no length: training needs ``max_steps``)."""
        return isinstance(self.dataset, IterableDataset)

    @property
    def num_rows(self) -> int | None:
        """The number of rows, or None for streamed data."""
        return None if self.streaming else len(self.dataset)

    @property
    def num_shards(self) -> int:
        """How many shards the data is read from (1 for data in memory): the processes of a run read different ones."""
        return self.dataset.n_shards if self.streaming else 1


def load_training_data(
    *,
    dataset: str | None = None,
    dataset_config: str | None = None,
    split: str = "train",
    captions: str | Path | None = None,
    images: str | Path | None = None,
    pairs: str | Path | None = None,
    shards: str | Sequence[str] | None = None,
    streaming: bool = False,
    columns: Sequence[str] = (),
    max_samples: int | None = None,
    show_progress_bar: bool = True,
) -> TrainingData:
    """Load the training data from exactly one source.

    Args:
        dataset: a Hugging Face dataset id, a local dataset folder (``Dataset.save_to_disk`` or files
            ``datasets.load_dataset`` reads), used with ``dataset_config`` and ``split``.
        shards: WebDataset tar shards (the img2dataset / open_clip layout: ``{key}.jpg`` + ``{key}.txt`` per sample),
            as a brace pattern (``"data/{00000..00009}.tar"``, several patterns separated by ``::`` as open_clip
            takes them) or a list of paths or URLs. Always streamed.
        streaming: stream ``dataset`` (``datasets.load_dataset(..., streaming=True)``) instead of loading it.
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
    sources = (("dataset", dataset), ("captions", captions), ("pairs", pairs), ("shards", shards))
    given = [name for name, value in sources if value]
    if len(given) != 1:
        raise TrainingDataError(
            "Give the training data in one way: --dataset (a Hugging Face dataset id or folder), --shards (WebDataset "
            "tar shards), --captions with --images (a caption table and its images) or --pairs (a table of text "
            f"pairs); got {given or 'none'}."
        )
    if images and not captions:
        raise TrainingDataError("--images needs --captions (the table that names the images and their captions).")
    if streaming and not (dataset or shards):
        raise TrainingDataError("--streaming applies to --dataset (shards are always streamed); drop it or use --dataset.")
    if shards:
        data, source = read_webdataset_shards(shards, columns=columns)
    elif dataset:
        data = _read_dataset(dataset, dataset_config, split, streaming=streaming)
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
    if isinstance(data, IterableDataset):
        return _streamed(data, source, max_samples)
    if max_samples is not None:
        data = data.select(range(min(max_samples, len(data))))
    if len(data) == 0:
        raise TrainingDataError(f"The training data {source} has no rows; check the file, the split or --max-train-samples.")
    image_columns = _image_columns(data)
    if dataset and image_columns:
        _check_decodable(data, image_columns, source)
    return TrainingData(data, f"{source}: {len(data)} rows, columns {data.column_names}", image_columns)


def expand_shards(shards: str | Sequence[str]) -> list[str]:
    """The shard paths or URLs of a brace pattern (``"data/{00000..00009}.tar"``; ``::`` joins several patterns,
    as open_clip's ``--train-data`` does) or of a list of patterns.

    Raises:
        TrainingDataError: no shard, or a local shard that does not exist (the first missing one is named).
    """
    patterns = shards.split("::") if isinstance(shards, str) else list(shards)
    expanded = [path for pattern in patterns for path in braceexpand.braceexpand(str(pattern))]
    if not expanded:
        raise TrainingDataError(f"--shards {shards!r} names no shard; give e.g. 'data/{{00000..00009}}.tar'.")
    local = [path for path in expanded if "://" not in path]
    missing = [path for path in local if not os.path.isfile(path)]
    if missing:
        raise TrainingDataError(
            f"{len(missing)} of the {len(expanded)} shards of --shards {shards!r} do not exist, e.g. {missing[0]}; "
            "check the pattern (brace ranges are inclusive: {00000..00009} is 10 shards)."
        )
    return expanded


def read_webdataset_shards(shards: str | Sequence[str], *, columns: Sequence[str] = ()) -> tuple[IterableDataset, str]:
    """WebDataset tar shards as a ``datasets.IterableDataset`` of (image, caption), read shard by shard.

    Each sample of a shard is the files sharing a key (``0000012.jpg``, ``0000012.txt``, ...); the image is the first
    of :data:`WEBDATASET_IMAGE_KEYS` present and the caption the first of :data:`WEBDATASET_TEXT_KEYS`, unless
    ``columns`` names the two extensions (``--columns png caption``). Hugging Face ``datasets``' ``webdataset``
    builder reads the shards; a multi-process run gives each process its own shards (see
    :func:`st_oblique.app.train_pipeline.training_arguments`).

    Returns:
        The dataset (columns: image extension, text extension) and a description of its source.

    Raises:
        TrainingDataError: missing shards, or shards without an image or a caption per sample.
    """
    paths = expand_shards(shards)
    source = f"{len(paths)} WebDataset shard(s) {shards if isinstance(shards, str) else paths[0] + ', ...'}"
    try:
        data = datasets.load_dataset("webdataset", data_files={"train": paths}, split="train", streaming=True)
    except (ValueError, OSError) as error:
        raise TrainingDataError(f"Cannot read {source}: {one_line(error, quoted=True)}") from error
    available = list(data.column_names or [])
    if columns:
        chosen = list(columns)
    else:
        image = next((key for key in WEBDATASET_IMAGE_KEYS if key in available), None)
        text = next((key for key in WEBDATASET_TEXT_KEYS if key in available), None)
        if image is None or text is None:
            raise TrainingDataError(
                f"The samples of {source} have the files {[key for key in available if not key.startswith('__')]}; "
                f"training needs an image ({', '.join(WEBDATASET_IMAGE_KEYS)}) and a caption "
                f"({', '.join(WEBDATASET_TEXT_KEYS)}) per key, or name them with --columns IMAGE_EXT TEXT_EXT."
            )
        chosen = [image, text]
    return select_columns(data, chosen, source), source


def _streamed(data: IterableDataset, source: str, max_samples: int | None) -> TrainingData:
    """Streamed training data, its first row read (and its images decoded) so that an empty or broken source fails
    before training."""
    if max_samples is not None:
        data = data.take(max_samples)
    try:
        first = next(iter(data), None)
    except Exception as error:  # whatever the builder or the decoder raises on a broken first shard
        raise TrainingDataError(f"Cannot read the first row of {source}: {one_line(error, quoted=True)}") from error
    if first is None:
        raise TrainingDataError(f"The training data {source} has no rows; check the shards, the split or --max-train-samples.")
    empty = [column for column, value in first.items() if value is None or value == ""]
    if empty:
        raise TrainingDataError(f"The first row of {source} has no value in {empty}; check the shards' files.")
    description = f"{source}: streamed from {data.n_shards} shard(s), columns {data.column_names}"
    return TrainingData(data, description, _image_columns(data))


def check_modalities(data: TrainingData, modalities: Sequence[str]) -> None:
    """Raise :class:`TrainingDataError` if ``data`` has image columns and the model embeds only text."""
    if data.image_columns and "image" not in modalities:
        raise TrainingDataError(
            f"The column(s) {data.image_columns} of the training data hold images, but this backbone embeds only "
            f"text; use an image-text backbone (--backbone {' or '.join(_image_text_families())}) or text columns."
        )


def _image_text_families() -> list[str]:
    return [name for name, family in BACKBONE_FAMILIES.items() if "image" in family.modalities]


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
    except CaptionTableColumnsError as error:
        # A header with other names can be chosen with --columns; a missing header cannot.
        hint = "" if error.header_is_data else " Or name them with --columns IMAGE_COLUMN CAPTION_COLUMN."
        raise TrainingDataError(f"{error}{hint}") from error
    except ValueError as error:
        raise TrainingDataError(str(error)) from error
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
        reason = header_looks_like_data(header)
        if reason:  # else its first pair would silently become the column names
            separator = "<TAB>" if delimiter == "\t" else ","
            names = ["anchor", "positive", *(f"negative_{index}" for index in range(1, len(header) - 1))]
            raise TrainingDataError(
                f"The first row of {path} looks like data, not a header ({reason}): add a header "
                f"row `{separator.join(names[: len(header)])}` as its first line."
            )
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


def _read_dataset(name: str, config: str | None, split: str, *, streaming: bool = False) -> Any:
    path = Path(name).expanduser()
    try:
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise TrainingDataError(f"{name} has no split {split!r}; its splits are {list(loaded)} (--split).")
                loaded = loaded[split]
            return loaded.to_iterable_dataset(num_shards=max(1, loaded.num_rows // 1000)) if streaming else loaded
        return datasets.load_dataset(name, config, split=split, streaming=streaming)
    except TrainingDataError:
        raise
    except FileNotFoundError as error:
        raise TrainingDataError(
            f"Cannot find the dataset {name!r}: {one_line(error, quoted=True)}. Give a Hugging Face dataset id (online) or a "
            "local dataset folder."
        ) from error
    except (ValueError, ConnectionError, OSError) as error:
        raise TrainingDataError(f"Cannot load the dataset {name!r} (split {split!r}): {one_line(error, quoted=True)}") from error


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
                    f"Row {index} of {source} has an image in {column!r} that cannot be read ({one_line(error, quoted=True)}); "
                    "fix or drop such rows."
                ) from error


def _image_names(images: Sequence[Any]) -> list[str]:
    members = getattr(images, "members", None)
    if members is not None:  # a tar archive
        return [member.name for member in members]
    return [str(image) for image in images]


def _read_and_check_images(images: Sequence[Any], names: list[str], table: str, show_progress_bar: bool) -> list[bytes]:
    """The encoded bytes of every image, each decoded once (so truncated files are caught)."""

    encoded, broken = [], []
    for index in tqdm(range(len(images)), desc="Checking images", disable=not show_progress_bar, unit="image"):
        item = images[index]
        try:
            data = Path(item).read_bytes() if isinstance(item, (str, Path)) else bytes(item)
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # a full decode: verify() passes truncated JPEGs, which then fail mid-training
        except Exception as error:
            reason = "not an image file PIL can read" if type(error).__name__ == "UnidentifiedImageError" else one_line(error, quoted=True)
            broken.append(f"{names[index]} ({reason})")
            continue
        encoded.append(data)
    if broken:
        raise TrainingDataError(
            f"{len(broken)} of {len(images)} images named in {table} cannot be read, e.g. {broken[0]}; replace them or "
            "remove their rows from the table."
        )
    return encoded
