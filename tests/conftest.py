from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hub.fake_hub import READ_TOKEN, WRITE_TOKEN, FakeHub, point_huggingface_hub_at
from tiny_models import tiny_bert

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine intra-op threads that wait for each other
    make them many times slower (measured: the evaluation tests took 144 s with torch's default threads under
    load and 19 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A fake Hub with huggingface_hub of this process pointed at it (restored after the test)."""
    with FakeHub(tokens={WRITE_TOKEN: "write", READ_TOKEN: "read"}) as fake:
        point_huggingface_hub_at(monkeypatch, fake.url, str(tmp_path / "hub_cache"))
        yield fake
