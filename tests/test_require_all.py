"""ST_OBLIQUE_REQUIRE_ALL=1 (set by .ci/run) turns skips that would hide a failure into failures: a skip of a test
marked ``shared`` / ``serving`` / ``olah`` / ``distributed`` / ``browser``, and a module that skips while collected
(``pytest.importorskip`` of a package CI installs). Each case runs tests/conftest.py's hooks in a fresh pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

MARKED_SKIP = """
import pytest

pytestmark = pytest.mark.distributed


def test_launcher():
    pytest.skip("accelerate's launcher is not installed")
"""
MODULE_SKIP = """
import pytest

pytest.importorskip("st_oblique_no_such_package")


def test_anything():
    assert True
"""
UNMARKED_SKIP = """
import pytest


def test_optional():
    pytest.skip("an optional path")
"""


def run(tmp_path: Path, source: str, require_all: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_case.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("ST_OBLIQUE_REQUIRE_ALL", None)
    env.pop("ST_OBLIQUE_REQUIRE_BROWSER", None)
    if require_all:
        env["ST_OBLIQUE_REQUIRE_ALL"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "test_case.py", "-q", "-p", "conftest", "-p", "no:cacheprovider"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.parametrize("source", [MARKED_SKIP, MODULE_SKIP], ids=["marked_test_skip", "module_skip_at_collection"])
def test_a_skip_that_would_hide_a_failure_fails_under_require_all(tmp_path, source):
    required = run(tmp_path, source, require_all=True)
    assert required.returncode != 0, required.stdout
    assert "skipped although required" in required.stdout or "module skipped while collected" in required.stdout
    relaxed = run(tmp_path, source, require_all=False)
    assert relaxed.returncode in (0, 5) and "1 skipped" in relaxed.stdout, relaxed.stdout  # 5: nothing left to run
    assert "st-oblique skipped tests: 1" in relaxed.stdout  # the line .ci/run reads


def test_an_unmarked_skip_stays_a_skip_and_is_counted(tmp_path):
    result = run(tmp_path, UNMARKED_SKIP, require_all=True)
    assert result.returncode == 0 and "st-oblique skipped tests: 1" in result.stdout, result.stdout
