"""Shared by the search app's tests: the tiny models' oblique shape and the browser-availability check."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

NUM_TOKENS, TOKEN_DIM = 4, 8
"""K and d of the tiny models of tests/app/conftest.py."""

BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""Chromium flags: no sandbox (containers, root), and none of the browser's own background traffic."""
REQUIRE_BROWSER = "ST_OBLIQUE_REQUIRE_BROWSER"
INSTALL_LINE = "apt-get install -y chromium && pip install 'st-oblique[app]'"


def chromium_or_skip() -> str:
    """The path of a Chromium that Playwright can drive; otherwise the test is skipped with the reason and the install
    line, or fails when ``ST_OBLIQUE_REQUIRE_BROWSER=1`` (set by .ci/run where chromium is installed)."""
    missing = []
    for module in ("playwright", "gradio", "faiss"):
        if importlib.util.find_spec(module) is None:
            missing.append(f"the Python package {module!r} is not installed")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        missing.append("no `chromium` on PATH")
    if not missing:
        return executable
    message = (
        f"browser test of `st-oblique app` not run: {'; '.join(missing)}. Install: {INSTALL_LINE} "
        "(Playwright drives the system Chromium; `playwright install` is not needed)"
    )
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{message} [{REQUIRE_BROWSER}=1 turns this skip into a failure]")
    pytest.skip(message)
