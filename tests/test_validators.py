"""One test per validator of st_oblique.validators: what it accepts, what it refuses and the message it gives."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from st_oblique.errors import ObliqueConfigError
from st_oblique.validators import (
    check_positive_int,
    check_positive_number,
    check_token_count,
    check_token_counts,
    default_token_counts,
    kept_tokens,
    parse_token_counts,
)


def test_check_positive_int():
    assert check_positive_int(3, name="num_tokens") == 3
    assert check_positive_int(0, name="--seed", allow_zero=True) == 0
    for bad in (0, -1, 1.0, True, "3", None):
        with pytest.raises(ValueError) as error:
            check_positive_int(bad, name="num_tokens")
        assert str(error.value) == f"num_tokens must be a positive whole number, got {bad!r}."
    with pytest.raises(ObliqueConfigError, match=r"^--workers must be 0 or a positive whole number, got -1\.$"):
        check_positive_int(-1, name="--workers", allow_zero=True, error=ObliqueConfigError)
    with pytest.raises(argparse.ArgumentTypeError, match=r"^must be a positive whole number, got 0\.$"):
        check_positive_int(0, name="", error=argparse.ArgumentTypeError)


def test_check_positive_number():
    assert check_positive_number(0.5, name="--scale") == 0.5
    assert check_positive_number(2, name="--scale") == 2
    for bad in (0, -0.1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError) as error:
            check_positive_number(bad, name="--scale")
        assert str(error.value) == f"--scale must be a positive number, got {bad!r}."


def test_check_token_count():
    assert check_token_count(1, 4) == 1 and check_token_count(4, 4) == 4
    for bad in (0, 5, 2.0, False):
        with pytest.raises(ValueError) as error:
            check_token_count(bad, 4, name="keep_tokens")
        assert str(error.value) == f"keep_tokens must be a whole number of tokens between 1 and K=4, got {bad!r}."


def test_check_token_counts():
    assert check_token_counts((4, 1, 2)) == [4, 1, 2]  # the order is the caller's
    assert check_token_counts([1, 16], 16) == [1, 16]
    cases = {
        (): "token_counts takes whole numbers of tokens >= 1 (e.g. 1,2,4), got [].",
        (0, 2): "token_counts takes whole numbers of tokens >= 1 (e.g. 1,2,4), got [0, 2].",
        (1.5,): "token_counts takes whole numbers of tokens >= 1 (e.g. 1,2,4), got [1.5].",
        (2, 2): "token_counts repeats a token count: [2, 2].",
    }
    for counts, message in cases.items():
        with pytest.raises(ValueError) as error:
            check_token_counts(counts)
        assert str(error.value) == message
    with pytest.raises(ValueError) as error:
        check_token_counts([1, 8], 4)
    assert str(error.value) == "token_counts takes whole numbers of tokens between 1 and K=4 (e.g. 1,2,4), got [1, 8]."


def test_parse_token_counts():
    assert parse_token_counts("1, 2,4") == [1, 2, 4]
    assert parse_token_counts("default", 12) == [1, 2, 4, 8, 12]
    with pytest.raises(ValueError, match=r"^token counts takes whole numbers of tokens >= 1 separated by commas"):
        parse_token_counts("default")  # 'default' needs K
    with pytest.raises(ObliqueConfigError) as error:
        parse_token_counts("1,32", 16, name="--nested-tokens", num_tokens_name="--num-tokens", error=ObliqueConfigError)
    assert str(error.value) == (
        "--nested-tokens takes whole numbers of tokens between 1 and --num-tokens=16 separated by commas (e.g. 1,2,4) "
        "or 'default' (1, 2, 4, ... and K), got '1,32'."
    )
    with pytest.raises(argparse.ArgumentTypeError, match=r"^repeats a token count: '2,2'\.$"):
        parse_token_counts("2,2", name="", error=argparse.ArgumentTypeError)
    with pytest.raises(ValueError, match=r"got '1;2'\.$"):
        parse_token_counts("1;2")


def test_default_token_counts():
    assert default_token_counts(16) == [1, 2, 4, 8, 16]
    assert default_token_counts(12) == [1, 2, 4, 8, 12]
    assert default_token_counts(1) == [1]
    assert all(check_token_counts(default_token_counts(k), k) for k in range(1, 40))


def test_kept_tokens():
    assert kept_tokens(None, 16, 32) == 16
    assert kept_tokens(512, 16, 32) == 16 and kept_tokens(1000, 16, 32) == 16
    assert kept_tokens(128, 16, 32) == 4 and kept_tokens(32, 16, 32) == 1
    for bad in (100, 0, -32, 64.0):
        with pytest.raises(ValueError) as error:
            kept_tokens(bad, 16, 32)
        assert str(error.value) == (
            f"truncate_dim={bad} would cut inside a token of this oblique model (K=16 tokens of d=32): its tokens "
            "would no longer be unit vectors and the dot product no longer a sum of cosines. Use a multiple of 32 "
            "(32, 64, 96, 128, ...) to keep the first tokens whole."
        )


def test_validators_import_nothing_heavy():
    """The command line checks its options with these rules before torch is imported."""
    code = "import sys, st_oblique.validators; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
