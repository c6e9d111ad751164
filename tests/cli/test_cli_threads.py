"""Every command lets torch's idle threads sleep (OMP_WAIT_POLICY=PASSIVE, set before torch loads) and takes
--threads N; evaluation/benchmarks/demo_threads.py measures what that saves on a busy machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from st_oblique.app.threads import configure_threads

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE = (
    "import os, sys; from st_oblique.app.cli import main; assert 'torch' not in sys.modules; "
    "code = main(sys.argv[1:]); import torch; "
    "print('RESULT', code, os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())"
)


def run_probe(*arguments: str, env_changes: dict[str, str] | None = None) -> list[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(env_changes or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", PROBE, *arguments], env=env, capture_output=True, text=True,
                          timeout=600)
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    return line.split()[1:]


MISSING = "no/such-model-folder"  # the command stops at once (exit 2), after the thread settings


def test_a_command_sets_the_wait_policy_and_threads_before_torch_loads():
    assert run_probe("info", MISSING, "--threads", "1") == ["2", "PASSIVE", "1"]


def test_the_users_wait_policy_wins():
    assert run_probe("info", MISSING, env_changes={"OMP_WAIT_POLICY": "ACTIVE"})[:2] == ["2", "ACTIVE"]


def test_threads_after_torch_was_imported(monkeypatch):
    """Called from Python with torch already loaded: torch.set_num_threads does what the environment cannot."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    try:
        configure_threads(2)
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    finally:
        torch.set_num_threads(threads)


def test_every_command_takes_threads():
    from st_oblique.app.cli import build_parser

    _, subparsers = build_parser()
    for name, parser in subparsers.items():
        assert "--threads" in parser._option_string_actions, name
