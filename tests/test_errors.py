"""st_oblique.errors: the hierarchy's promises and :func:`one_line`, the one way messages quote or print an error."""

from __future__ import annotations

import pytest

from st_oblique.errors import ObliqueConfigError, ObliqueError, ObliqueInputError, one_line


def test_one_line():
    multi = ValueError("Repository not found.\nRequest id: 123\n  (see the URL)")
    assert one_line(multi) == "Repository not found. Request id: 123 (see the URL)"
    assert one_line(multi, quoted=True) == "Repository not found"  # the first line, without its period
    assert one_line(KeyError("model_name")) == "model_name"  # a KeyError's message without its quotes
    assert one_line(RuntimeError()) == "RuntimeError"
    assert one_line(RuntimeError("  \n ")) == "RuntimeError"
    long = one_line(ValueError("x" * 500), limit=100)
    assert len(long) == 100 and long.endswith("...")
    assert f"Cannot read a.tsv: {one_line(OSError('disk full.'), quoted=True)}." == "Cannot read a.tsv: disk full."


def test_errors_are_the_builtin_a_caller_catches():
    assert issubclass(ObliqueConfigError, ObliqueInputError) and issubclass(ObliqueConfigError, ValueError)
    with pytest.raises(ValueError):
        raise ObliqueConfigError("--x must be positive.")
    assert issubclass(ObliqueInputError, ObliqueError)
