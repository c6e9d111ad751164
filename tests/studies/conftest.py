"""The studies live in the repository's top-level ``evaluation`` package: make it importable under plain ``pytest``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The study runs with 1 torch thread (its config's default): on a busy 2-core machine, 2 threads spin-wait and
    small steps take 100x longer. Restored afterwards, since ``main`` sets the process-wide count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
