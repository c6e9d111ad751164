"""st_oblique._version: the release and the library versions every report records."""

from __future__ import annotations

import platform
from importlib import metadata

import sentence_transformers
import torch

import st_oblique
from st_oblique._version import package_versions


def test_package_versions():
    versions = package_versions()
    assert list(versions) == ["st_oblique", "python", "sentence_transformers", "transformers", "torch", "open_clip", "mteb"]
    assert versions["st_oblique"] == st_oblique.__version__
    assert versions["python"] == platform.python_version()
    assert versions["torch"] == torch.__version__  # imported: its own version string, with the build (+cpu, +cu130)
    assert versions["sentence_transformers"] == sentence_transformers.__version__
    assert versions["open_clip"] == metadata.version("open_clip_torch")
