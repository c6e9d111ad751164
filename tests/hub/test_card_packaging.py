"""The card template ships inside the package: a regular (non-editable) wheel contains it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from st_oblique.model.card import TEMPLATE_PATH

REPO = Path(__file__).resolve().parents[2]


def test_template_is_found_from_the_package():
    assert TEMPLATE_PATH.is_file()
    assert TEMPLATE_PATH.resolve() == (REPO / "model_cards" / TEMPLATE_PATH.name).resolve()


def test_wheel_contains_the_template(tmp_path):
    source = tmp_path / "source"  # build a copy: building in place would write build/ and egg-info into the tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "st_oblique", source / "st_oblique", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "model_cards", source / "model_cards", ignore=ignore)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("st_oblique-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = archive.read(f"st_oblique/model_cards/{TEMPLATE_PATH.name}")
    assert packaged == TEMPLATE_PATH.read_bytes()
