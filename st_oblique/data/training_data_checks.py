"""Checks of training data before the first step: rows, input columns that hold texts or images, no ``None``, which
columns become hard negatives. Used by :class:`~st_oblique.training.trainer.ObliqueTrainer` before Sentence Transformers'
constructor and by :class:`~st_oblique.model.card.ObliqueModelCardData` when any Sentence Transformers trainer
(a plain ``SentenceTransformerTrainer`` too) hands it the datasets, so both give the same one-sentence message.

Example::

    from st_oblique.data.training_data_checks import check_training_dataset

    check_training_dataset(dataset, name="train_dataset", loss=loss)   # TrainingDataError naming column and row
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Value
from torch import nn

from st_oblique.errors import TrainingDataError

__all__ = ["LABEL_COLUMNS", "already_checked", "check_training_dataset", "datasets_checked"]

logger = logging.getLogger("st_oblique.training.trainer")  # the logger the checks have always used (tests, users' filters)

LABEL_COLUMNS = ("label", "score")
"""Columns Sentence Transformers' data collator passes to the loss as labels, not as inputs."""

_CHECKED = ContextVar("st_oblique_training_data_checked", default=False)


@contextmanager
def datasets_checked() -> Iterator[None]:
    """Within this block the datasets count as checked: :class:`~st_oblique.training.trainer.ObliqueTrainer` checks them
    before Sentence Transformers' constructor, whose model card hook then does not check (and warn) again."""
    token = _CHECKED.set(True)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def already_checked() -> bool:
    """Whether the datasets being handed to the model card were checked already (see :func:`datasets_checked`)."""
    return _CHECKED.get()


def check_training_dataset(dataset: Any, *, name: str = "train_dataset", loss: Any = None) -> None:
    """Raise :class:`TrainingDataError` (naming the dataset, column and row) for training data that would fail or
    train on the wrong thing; log which columns become hard negatives.

    Checked: the dataset has rows; every input column (all but ``label``/``score``) holds texts or images, not
    numbers or booleans, and no ``None`` (the first row with one is named); at least two input columns. Columns
    after the first two are what the losses take as hard negatives: that is logged as a warning, so that a stray
    column is noticed. Streaming (``IterableDataset``) data is checked by its features only.

    Args:
        dataset: a ``datasets.Dataset``, ``DatasetDict`` or dict of them.
        name: how messages name it (``"train_dataset"``).
        loss: the loss (or dict of losses) it feeds, named in messages.
    """
    if isinstance(dataset, (dict, DatasetDict)):
        for key, part in dataset.items():
            check_training_dataset(
                part, name=f"{name}[{key!r}]", loss=loss.get(key) if isinstance(loss, dict) else loss
            )
        return
    features = getattr(dataset, "features", None)
    if features is None:
        return
    loss_name = type(loss).__name__ if isinstance(loss, nn.Module) else "the loss"
    columns = [column for column in features if column not in LABEL_COLUMNS and column != "dataset_name"]
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise TrainingDataError(f"{name} has no rows (columns {list(features)}); give it at least one batch of rows.")
    for column in columns:
        feature = features[column]
        if isinstance(feature, Value) and feature.dtype not in ("string", "large_string"):
            raise TrainingDataError(
                f"Column {column!r} of {name} holds {feature.dtype} values, which {loss_name} would take as an input "
                f"(every column but 'label'/'score' is one). Remove it (dataset.remove_columns([{column!r}])) or, if "
                "it is the label, name it 'label' or 'score'."
            )
    if len(columns) < 2:
        raise TrainingDataError(
            f"{name} has the input column(s) {columns}; {loss_name} needs two (anchor, positive), then optional hard "
            "negatives."
        )
    if isinstance(dataset, Dataset):
        for column in columns:
            row = _first_null_row(dataset, column)
            if row is not None:
                raise TrainingDataError(
                    f"Row {row} of {name} has no value (None) in column {column!r}; drop or fill such rows, e.g. "
                    f"dataset.filter(lambda row: row[{column!r}] is not None)."
                )
    if len(columns) > 2:
        negatives = ", ".join(repr(column) for column in columns[2:])
        message = (
            f"{loss_name} trains on the columns of {name} in order: {columns[0]!r} as anchors, {columns[1]!r} as "
            f"positives and {negatives} as hard negatives. If a column is not a hard negative, remove it "
            "(dataset.select_columns([...]))."
        )
        logger.warning(message)


def _first_null_row(dataset: Any, column: str) -> int | None:
    values = dataset.with_format("arrow")[column]
    if values.null_count == 0:
        return None
    return int(pc.index(pc.is_null(values), True).as_py())
