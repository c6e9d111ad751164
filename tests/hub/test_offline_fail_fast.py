"""Offline, a Hub id fails in seconds with st-oblique's message, not after minutes of huggingface_hub's retries.

Measured before st_oblique.model.hub_access existed: ``oblique_text_model("sentence-transformers/all-MiniLM-L6-v2")``
with ``HF_ENDPOINT`` at a closed port took 240 s (five retries per file) and ended in transformers' ``OSError``;
the same model in the cache took 228 s. The end-to-end cases run in a fresh process, because huggingface_hub and
transformers read ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` when they are imported; the others point this process's
huggingface_hub at a closed port (the check runs before transformers is asked for anything). Times are measured
around the call only (importing torch is not the subject), against a functional bound of 10 s.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import st_oblique
from st_oblique.app.cli import main
from st_oblique.evaluation.model_loading import load_model
from st_oblique.model.hub_access import HUB_PROBE_TIMEOUT

REPO_ROOT = Path(__file__).resolve().parents[2]
BOUND_SECONDS = 10.0
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
OPEN_CLIP_HUB_ID = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"  # where open_clip gets ViT-B-32 laion2b_s34b_b79k


def closed_port_url() -> str:
    """An http URL on this machine where nothing listens (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def hub_cache_with(model_dir: str, repo_id: str, cache: Path) -> None:
    """``cache`` laid out as huggingface_hub's cache, holding ``model_dir`` as ``repo_id`` at main."""
    repository = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repository / "refs").mkdir(parents=True)
    (repository / "refs" / "main").write_text(commit)
    shutil.copytree(model_dir, repository / "snapshots" / commit)


def run_calls(calls: dict[str, str], env_changes: dict[str, str | None], tmp_path: Path) -> dict[str, dict]:
    """Run each Python call of ``calls`` in one fresh process with ``env_changes``: its error class, message and
    seconds (the call only)."""
    script = textwrap.dedent(
        """
        import json, sys, time
        import st_oblique
        from st_oblique import load, oblique_text_model  # the lazy imports (torch, ...) before the clock starts
        calls = json.loads(sys.argv[1])
        outcomes = {}
        for name, call in calls.items():
            start = time.monotonic()
            try:
                eval(call)
                outcomes[name] = {"error": None, "message": ""}
            except Exception as error:
                outcomes[name] = {"error": type(error).__name__, "message": str(error)}
            outcomes[name]["seconds"] = time.monotonic() - start
        print("OUTCOMES " + json.dumps(outcomes))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    done = subprocess.run([sys.executable, "-c", script, json.dumps(calls)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("OUTCOMES ")]
    assert lines, done.stderr[-3000:]
    return {"stderr": done.stderr, **json.loads(lines[-1].removeprefix("OUTCOMES "))}


def assert_unreachable_message(message: str, model: str, endpoint: str, cache: Path) -> None:
    assert f"Cannot load the model {model!r}" in message
    assert f"not in the Hugging Face cache ({cache})" in message
    assert f"the Hub at {endpoint} cannot be reached" in message
    assert "local folder" in message and "HF_ENDPOINT" in message and "HF_HUB_OFFLINE=1" in message


@pytest.mark.newer_hub_only  # transformers 5.0 / huggingface_hub 1.27: the cached load waits ~2 min (README "Install")
def test_readme_quickstart_with_the_hub_unreachable_fails_in_seconds_or_reads_the_cache(tmp_path, tiny_bert_dir):
    """The README's first Python line, in a fresh process with HF_ENDPOINT at a closed port and HF_HUB_OFFLINE
    unset: st-oblique's message in seconds; a model in the cache loads from it at once.

    Not on the oldest supported versions (transformers 5.0, huggingface_hub 1.27): there the cached load took 116 s,
    huggingface_hub's retries from a call st-oblique's ``local_files_only`` does not reach; the README says so."""
    endpoint = closed_port_url()
    hub_cache_with(tiny_bert_dir, HUB_ID, tmp_path / "other_cache")
    outcomes = run_calls(
        {
            "builder": f"st_oblique.oblique_text_model({HUB_ID!r}, num_tokens=16, token_dim=32)",
            "load": f"st_oblique.load({HUB_ID!r})",
            "cached": f"st_oblique.oblique_text_model({HUB_ID!r}, num_tokens=4, token_dim=8, "
            f"cache_folder={str(tmp_path / 'other_cache')!r})",
        },
        {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": None},
        tmp_path,
    )
    for name in ("builder", "load"):
        outcome = outcomes[name]
        assert outcome["error"] == "ObliqueLoadError", outcome
        assert_unreachable_message(outcome["message"], HUB_ID, endpoint, tmp_path / "hf_home" / "hub")
        assert outcome["seconds"] < BOUND_SECONDS, outcome
    assert outcomes["cached"]["error"] is None, outcomes["cached"]
    assert outcomes["cached"]["seconds"] < BOUND_SECONDS, outcomes["cached"]
    assert "cannot be reached (ConnectError" in outcomes["stderr"] and "from the cache" in outcomes["stderr"]
    assert "Retry" not in outcomes["stderr"]  # huggingface_hub's retry messages never appear


def test_readme_quickstart_with_hf_hub_offline_fails_in_seconds(tmp_path):
    outcomes = run_calls(
        {
            "builder": f"st_oblique.oblique_text_model({HUB_ID!r}, num_tokens=16, token_dim=32)",
            "load": f"st_oblique.load({HUB_ID!r})",
        },
        {"HF_HUB_OFFLINE": "1"},
        tmp_path,
    )
    for name in ("builder", "load"):
        outcome = outcomes[name]
        assert outcome["error"] == "ObliqueLoadError", outcome
        message = outcome["message"]
        assert f"Cannot load the model {HUB_ID!r}" in message and "there is no such folder" in message
        assert f"not in the cache ({tmp_path / 'hf_home' / 'hub'}) while downloads are off (HF_HUB_OFFLINE=1)" in message
        assert "local folder" in message and "HF_ENDPOINT" in message
        assert outcome["seconds"] < BOUND_SECONDS, outcome


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path) -> str:
    """This process's huggingface_hub pointed at a closed port, downloads on, an empty cache."""
    from huggingface_hub import constants

    endpoint = closed_port_url()
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SENTENCE_TRANSFORMERS_HOME", raising=False)
    return endpoint


@pytest.mark.parametrize(
    "call, model",
    [
        (lambda local: st_oblique.oblique_dual_encoder(local, HUB_ID, num_tokens=4, token_dim=8), HUB_ID),
        (lambda local: st_oblique.oblique_dual_encoder(HUB_ID, local, num_tokens=4, token_dim=8), HUB_ID),
        (lambda local: st_oblique.oblique_clip("openai/clip-vit-base-patch32", num_tokens=4, token_dim=8),
         "openai/clip-vit-base-patch32"),
        (lambda local: st_oblique.oblique_open_clip("ViT-B-32", "laion2b_s34b_b79k", num_tokens=4, token_dim=8),
         OPEN_CLIP_HUB_ID),
        (lambda local: st_oblique.oblique_open_clip(f"hf-hub:{OPEN_CLIP_HUB_ID}", num_tokens=4, token_dim=8),
         OPEN_CLIP_HUB_ID),
        (lambda local: load_model(HUB_ID), HUB_ID),
        (lambda local: st_oblique.load("runs/lit-oblique"), "runs/lit-oblique"),  # a mistyped folder looks like an id
    ],
    ids=["dual-image", "dual-text", "clip", "open_clip-pretrained", "open_clip-hf-hub", "load_model", "typo"],
)
def test_every_builder_and_loader_fails_in_seconds(call, model, unreachable_hub, tmp_path, tiny_bert_dir):
    start = time.monotonic()
    with pytest.raises(st_oblique.ObliqueLoadError) as raised:
        call(tiny_bert_dir)
    assert time.monotonic() - start < BOUND_SECONDS
    assert_unreachable_message(str(raised.value), model, unreachable_hub, tmp_path / "cache")


def test_random_open_clip_architectures_and_local_folders_are_not_checked(unreachable_hub, tiny_bert_dir):
    """Names that download nothing never meet the check (a built-in architecture name looks like a Hub id)."""
    from st_oblique.model.loading_options import MODEL_NAME_PARAMETERS

    assert "model_name_or_path" in MODEL_NAME_PARAMETERS
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=2, token_dim=4)
    assert model.encode(["a"]).shape == (1, 8)
    from st_oblique.builders.open_clip import _open_clip_hub_models

    defaults = {"revision": None, "token": None, "local_files_only": False, "trust_remote_code": False}
    assert _open_clip_hub_models({"model_name": "ViT-B-32", "pretrained": None, **defaults}) == []
    assert _open_clip_hub_models({"model_name": "RN50", "pretrained": "openai", **defaults})  # a tag downloads


def test_local_files_only_is_named_as_the_switch(tmp_path):
    with pytest.raises(st_oblique.ObliqueLoadError, match=r"downloads are off \(local_files_only=True\)"):
        st_oblique.oblique_text_model("someone/not-cached", local_files_only=True, cache_folder=str(tmp_path))


def test_an_endpoint_that_never_answers_counts_as_unreachable_after_the_probe_timeout(monkeypatch, tmp_path):
    """A server that accepts connections and never answers (a black-holed proxy): the probe's timeout decides."""
    from huggingface_hub import constants

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nobody reads or answers
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
        start = time.monotonic()
        with pytest.raises(st_oblique.ObliqueLoadError, match="cannot be reached"):
            st_oblique.load(HUB_ID)
        seconds = time.monotonic() - start
    assert HUB_PROBE_TIMEOUT - 0.5 <= seconds < BOUND_SECONDS


def test_the_cli_prints_the_message_and_exits_2(unreachable_hub, capsys):
    start = time.monotonic()
    assert main(["info", HUB_ID]) == 2
    assert time.monotonic() - start < BOUND_SECONDS
    err = capsys.readouterr().err
    assert f"st-oblique info: error: Cannot load the model {HUB_ID!r}" in err and unreachable_hub in err
