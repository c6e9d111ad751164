"""Converters from published checkpoints of other code bases into st-oblique model folders.

- :func:`convert_clip_mtob` (``clip_mtob``): the paper's own release (github minogame/clip-mtob), both variants.
"""

from __future__ import annotations

from st_oblique.converters.clip_mtob import ClipMtobCheckpointError, ClipMtobSource, convert_clip_mtob

__all__ = ["ClipMtobCheckpointError", "ClipMtobSource", "convert_clip_mtob"]
