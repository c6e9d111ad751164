from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import tiny_bert

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """The shared data/weights folder: $ST_OBLIQUE_SHARED, else ../shared next to the repository."""
    return Path(os.environ.get("ST_OBLIQUE_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_root()
    if not (root / "README.md").exists():
        pytest.skip(f"shared data not found at {root} (set ST_OBLIQUE_SHARED to its location)")
    return root


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert"))
