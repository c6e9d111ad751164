"""The rules st-oblique checks its arguments by, each written once.

Torch-free (it imports nothing but the standard library), so the command line checks its options with the same
rules as the library before anything heavy is imported.

Every validator returns the checked value and takes the ``name`` the caller knows the value by (``"num_tokens"``,
``"--nested-tokens"``), which opens its message, and the exception class to raise: ``ValueError`` by default,
:class:`~st_oblique.errors.ObliqueConfigError` for the options of the ``st-oblique`` command,
``argparse.ArgumentTypeError`` for an argparse ``type`` (with ``name=""``: argparse names the option itself).

Example::

    from st_oblique.validators import check_positive_int, kept_tokens, parse_token_counts

    check_positive_int(16, name="num_tokens")              # 16
    parse_token_counts("1,2,4", num_tokens=16)             # [1, 2, 4]
    kept_tokens(128, num_tokens=16, token_dim=32)         # 4: truncate_dim=128 keeps the first 4 tokens
    check_positive_int(0, name="--batch-size")             # ValueError: --batch-size must be a positive whole number, got 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "check_positive_int",
    "check_positive_number",
    "check_token_count",
    "check_token_counts",
    "default_token_counts",
    "kept_tokens",
    "parse_token_counts",
]

ErrorClass = type[Exception]


def check_positive_int(value: Any, *, name: str, allow_zero: bool = False, error: ErrorClass = ValueError) -> int:
    """``value`` if it is a whole number >= 1 (>= 0 with ``allow_zero``); ``True`` is not a number here.

    Raises:
        error: "``name`` must be a positive whole number, got ``value``." (or "0 or a positive whole number").
    """
    minimum = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "0 or a positive whole number" if allow_zero else "a positive whole number"
        raise error(f"{_subject(name)}must be {kind}, got {value!r}.")
    return value


def check_positive_number(value: Any, *, name: str, error: ErrorClass = ValueError) -> float:
    """``value`` if it is a finite number > 0 (an int or a float, not a bool).

    Raises:
        error: "``name`` must be a positive number, got ``value``."
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise error(f"{_subject(name)}must be a positive number, got {value!r}.")
    return value


def check_token_count(
    count: Any, num_tokens: int, *, name: str = "the token count", num_tokens_name: str = "K",
    error: ErrorClass = ValueError,
) -> int:
    """``count`` if it is a whole number of tokens from 1 to K (``num_tokens``): the first ``count`` tokens of an
    oblique embedding, a point of OB(d, count).

    Args:
        num_tokens_name: how the message names K (``"K"``, ``"--num-tokens"``).

    Raises:
        error: "``name`` must be a whole number of tokens between 1 and K=``num_tokens``, got ``count``."
    """
    if not _is_token_count(count, num_tokens):
        raise error(
            f"{_subject(name)}must be a whole number of tokens between 1 and {num_tokens_name}={num_tokens}, got "
            f"{count!r}."
        )
    return count


def check_token_counts(
    counts: Sequence[Any], num_tokens: int | None = None, *, name: str = "token_counts",
    num_tokens_name: str = "K", error: ErrorClass = ValueError,
) -> list[int]:
    """``counts`` as a list, in the given order: at least one count, each a whole number of tokens >= 1 (and <= K
    when ``num_tokens`` is given), none repeated. A cut inside a token would leave a partial token that is not a unit
    vector, so only whole tokens are allowed.

    Raises:
        error: "``name`` takes whole numbers of tokens between 1 and K=16 (e.g. 1,2,4), got [0, 2]." or
            "``name`` repeats a token count: [2, 2]."
    """
    return _checked_counts(list(counts), num_tokens, str(list(counts)), name, num_tokens_name, error, text=False)


def parse_token_counts(
    text: str, num_tokens: int | None = None, *, name: str = "token counts", num_tokens_name: str = "K",
    error: ErrorClass = ValueError,
) -> list[int]:
    """``"1,2,4,8,16"`` -> ``[1, 2, 4, 8, 16]``, checked as :func:`check_token_counts` does; with ``num_tokens``,
    ``"default"`` means :func:`default_token_counts` (1, 2, 4, ... and K).

    Raises:
        error: "``name`` takes whole numbers of tokens >= 1 separated by commas (e.g. 1,2,4), got '0,2'." or
            "``name`` repeats a token count: '2,2'."
    """
    if num_tokens is not None and str(text).strip().lower() == "default":
        return default_token_counts(num_tokens)
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    counts: list[Any] = [int(part) if part.isdigit() else part for part in parts]
    return _checked_counts(counts, num_tokens, repr(text), name, num_tokens_name, error, text=True)


def default_token_counts(num_tokens: int) -> list[int]:
    """1, 2, 4, ... (powers of two below K), then K: ``[1, 2, 4, 8, 16]`` for K=16, ``[1, 2, 4, 8, 12]`` for 12."""
    counts, count = [], 1
    while count < num_tokens:
        counts.append(count)
        count *= 2
    return [*counts, num_tokens]


def kept_tokens(
    truncate_dim: int | None, num_tokens: int, token_dim: int, *, name: str = "truncate_dim",
    error: ErrorClass = ValueError,
) -> int:
    """How many whole tokens a flat ``truncate_dim`` (Sentence Transformers' option) keeps of a point of OB(d, K).

    ``x[..., :truncate_dim]`` keeps the first ``truncate_dim // d`` tokens when ``truncate_dim`` is a multiple of d;
    any other cut leaves a partial token that is not a unit vector. ``None`` (or a value >= K*d) keeps all K.

    Raises:
        error: ``truncate_dim`` would cut inside a token, or is not positive (the message lists valid values).
    """
    if truncate_dim is None or (isinstance(truncate_dim, int) and truncate_dim >= num_tokens * token_dim):
        return num_tokens
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or truncate_dim <= 0 or truncate_dim % token_dim:
        whole = ", ".join(str(token_dim * keep) for keep in range(1, min(num_tokens, 4) + 1))
        raise error(
            f"{name}={truncate_dim} would cut inside a token of this oblique model (K={num_tokens} tokens of "
            f"d={token_dim}): its tokens would no longer be unit vectors and the dot product no longer a sum of "
            f"cosines. Use a multiple of {token_dim} ({whole}, ...) to keep the first tokens whole."
        )
    return truncate_dim // token_dim


def _checked_counts(
    counts: list[Any], num_tokens: int | None, given: str, name: str, num_tokens_name: str, error: ErrorClass,
    *, text: bool,
) -> list[int]:
    bound = ">= 1" if num_tokens is None else f"between 1 and {num_tokens_name}={num_tokens}"
    if not counts or not all(_is_token_count(count, num_tokens) for count in counts):
        separated = " separated by commas" if text else ""
        default = " or 'default' (1, 2, 4, ... and K)" if text and num_tokens is not None else ""
        raise error(
            f"{_subject(name)}takes whole numbers of tokens {bound}{separated} (e.g. 1,2,4){default}, got {given}."
        )
    if len(set(counts)) < len(counts):
        raise error(f"{_subject(name)}repeats a token count: {given}.")
    return counts


def _is_token_count(count: Any, num_tokens: int | None) -> bool:
    """A whole number of tokens from 1 to ``num_tokens`` (no upper bound for None)."""
    whole = isinstance(count, int) and not isinstance(count, bool) and count >= 1
    return whole and (num_tokens is None or count <= num_tokens)


def _subject(name: str) -> str:
    """The start of a message: ``"num_tokens "``; nothing for ``""`` (argparse puts "argument --x: " before it)."""
    return f"{name} " if name else ""
