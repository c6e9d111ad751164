"""Tables of texts given on the command line (``.tsv`` tab-separated or ``.csv``, with a header row), read one way by
every command that takes one (``st-oblique info --data``, ``st-oblique app --captions``): the library's caption-table
reader (:func:`st_oblique.data.datasets.captions.read_table`) and one rule for the text column.

Example::

    from st_oblique.app.text_table import read_table, text_column

    columns, rows = read_table("captions.tsv")           # ["image", "caption_idx", "caption"], [{"image": ...}, ...]
    column = text_column(columns, requested=None)         # "caption" (the first of TEXT_COLUMNS present)
"""

from __future__ import annotations

from st_oblique.data.datasets.captions import read_table

__all__ = ["TEXT_COLUMNS", "read_table", "text_column"]

TEXT_COLUMNS = ("caption", "text", "sentence", "anchor", "sentence1", "query")
"""The column a table's texts are read from when none is named: the first of these that the table has."""


def text_column(columns: list[str], requested: str | None) -> str | None:
    """The column to read texts from: ``requested`` if the table has it (else None), or the first of
    :data:`TEXT_COLUMNS` the table has, else its first column (None for a table without columns)."""
    if requested is not None:
        return requested if requested in columns else None
    return next((name for name in TEXT_COLUMNS if name in columns), columns[0] if columns else None)
