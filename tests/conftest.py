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

# --- No silent skips of real paths ----------------------------------------------------------------------------------
# A test of a real path (a server, the shared data, several processes, a browser) skips with a reason on a machine
# that lacks it; in CI that machine has everything, and a skip there would hide a failure. With
# ST_OBLIQUE_REQUIRE_ALL=1 (set by .ci/run) the skips of the tests marked below fail instead, and so does a module
# that skips while it is collected (an optional package that CI installs but could not import).
REQUIRE_ALL = os.environ.get("ST_OBLIQUE_REQUIRE_ALL") == "1"
if REQUIRE_ALL:
    os.environ.setdefault("ST_OBLIQUE_REQUIRE_BROWSER", "1")  # the browser test's own switch
REQUIRED_MARKERS = {
    "shared": REQUIRE_ALL,
    "serving": REQUIRE_ALL,
    "olah": REQUIRE_ALL,
    "distributed": REQUIRE_ALL,
    "browser": os.environ.get("ST_OBLIQUE_REQUIRE_BROWSER") == "1",
}
"""Marker -> whether a skip of a test carrying it fails this run."""


def required_markers(item: pytest.Item) -> list[str]:
    """The markers of ``item`` whose tests may not skip in this run."""
    return [name for name, required in REQUIRED_MARKERS.items() if required and item.get_closest_marker(name)]


SEAMS = (
    # where st-oblique meets the APIs of the libraries it builds on: run again on their oldest supported versions
    # (.ci/run, .ci/constraints-oldest.txt) with `pytest -m seams`
    "test_compat.py",  # the canaries of every private hook (st_oblique/_compat.py)
    "test_version_bounds.py",  # pyproject.toml's bounds are the versions installed
    "test_model.py", "modules/test_serialization.py", "reliability/test_loading.py", "cli/test_hub_layout.py",  # loading
    "modules/test_open_clip_module.py", "modules/test_clip_tokens.py",  # open_clip's and transformers' CLIP internals
    "test_training.py", "test_training_processes.py", "losses/test_trainer_integration.py",  # the trainer
    "hub/",  # huggingface_hub: the fake Hub round trip, pushes, cards, olah downloads
    "evaluation/test_mteb_integration.py", "evaluation/test_mteb_registry.py",  # mteb
    "cli/test_cli_demo.py",  # the command line end to end
    "app/test_streamed_training_data.py",  # datasets' streaming and sharding
    "app/test_search_app.py", "app/test_search_app_browser.py",  # gradio
    "export/test_export_token_sources.py",  # torch.export, onnxscript, ONNX Runtime, OpenVINO
    "export/test_smoothing.py",  # onnx graph editing and ONNX Runtime's dynamic quantizer
    "clip_mtob/test_parity.py",  # the converter's key mapping into transformers' BertModel and CLIPVisionModel
    "cli/test_cli_distributed.py::test_text_backbone", "cli/test_cli_distributed.py::test_dual_encoder_lit",  # DDP
)
"""Test files (or folders, or single tests) of the ``seams`` subset, relative to tests/."""


def pytest_collection_modifyitems(items):
    """A test that reads the shared data through the ``shared`` fixture is a ``shared`` test, marked or not; the
    tests listed in :data:`SEAMS` are ``seams`` tests."""
    tests = Path(__file__).resolve().parent
    for item in items:
        if "shared" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("shared"):
            item.add_marker(pytest.mark.shared)
        path = Path(str(item.path)).resolve()
        if not path.is_relative_to(tests):  # a test file run with this conftest as a plugin (test_require_all.py)
            continue
        relative = path.relative_to(tests).as_posix()
        name = f"{relative}::{item.originalname if hasattr(item, 'originalname') else item.name}"
        if any(name == seam or relative == seam or (seam.endswith("/") and relative.startswith(seam)) for seam in SEAMS):
            item.add_marker(pytest.mark.seams)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        markers = required_markers(item)
        if markers:
            report.outcome = "failed"
            report.longrepr = (
                f"skipped although required (ST_OBLIQUE_REQUIRE_ALL / ST_OBLIQUE_REQUIRE_BROWSER; marked "
                f"{', '.join(markers)}): {_skip_reason(report)}"
            )
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    if REQUIRE_ALL and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped while collected, under ST_OBLIQUE_REQUIRE_ALL=1: {_skip_reason(report)}"
    return report


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def pytest_terminal_summary(terminalreporter):
    """One line .ci/run reads: how many tests skipped (0 expected in CI)."""
    skipped = terminalreporter.stats.get("skipped", [])
    terminalreporter.write_line(f"st-oblique skipped tests: {len(skipped)}")


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
