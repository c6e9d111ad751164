"""Study and benchmark commands change no tracked file unless asked, and their report headers count right.

Before: ``python -m evaluation.studies.topology --config evaluation/studies/topology.yaml`` (the README's "reuses the
committed run records") rewrote ``evaluation/results/topology/results.md``, ``summary.json`` and the plots, and its
header said "Runs: 159 (0 executed now, 171 reused)".
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from evaluation.studies.topology import DEFAULT_CONFIG, main
from evaluation.study_output import (
    COMMITTED_RESULTS,
    REPO_ROOT,
    add_output_option,
    checked_output,
    committed_files,
    default_output,
    reuse_records,
)


def git_status() -> str:
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the repository must be a git checkout for this test: {done.stderr}"
    return done.stdout


def header(output: Path) -> str:
    return next(line for line in (output / "results.md").read_text().splitlines() if line.startswith("Runs: "))


def test_the_topology_command_with_its_defaults_leaves_git_status_unchanged(monkeypatch):
    """The README's study command, at smoke size, run from the repository root with the default output folder."""
    monkeypatch.chdir(REPO_ROOT)
    output = REPO_ROOT / default_output("topology_smoke")
    existed = output.exists()
    before = git_status()
    try:
        assert main(["--config", str(DEFAULT_CONFIG), "--smoke", "--regime", "C", "--rerun"]) == 0
        assert git_status() == before
        assert (output / "results.md").is_file() and (output / "regime_c_retrieval.png").is_file()
        first = header(output)
        tables = int(first.split()[1])
        assert first.startswith(f"Runs: {tables} in the tables below ({tables} executed by this command, 0 read from ")
        assert main(["--config", str(DEFAULT_CONFIG), "--smoke", "--regime", "C"]) == 0
        again = header(output)
        assert again.startswith(f"Runs: {tables} in the tables below (0 executed by this command, {tables} read from")
        assert f"this command executed 0 runs and reused {tables} stored ones" in again
        assert git_status() == before
    finally:
        if not existed:
            shutil.rmtree(output, ignore_errors=True)


def test_writing_over_committed_results_needs_overwrite(monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    committed = "evaluation/results/topology"
    before = git_status()
    with pytest.raises(SystemExit) as refused:
        main(["--config", str(DEFAULT_CONFIG), "--regime", "C", "--output-dir", committed])
    assert refused.value.code == 2
    message = capsys.readouterr().err
    assert f"{committed} holds results committed to the repository" in message and "--overwrite" in message
    assert git_status() == before


def test_every_study_and_benchmark_refuses_committed_results_by_default(tmp_path):
    """Each command's parser: the default output lies outside evaluation/results; a committed path is refused."""
    import argparse

    parser = argparse.ArgumentParser()
    add_output_option(parser, "benchmarks/x.json", option="--output")
    args = parser.parse_args([])
    assert args.output == Path("runs/evaluation/benchmarks/x.json") and not args.overwrite
    committed = COMMITTED_RESULTS / "benchmarks" / "cached_batch_scaling.json"
    assert committed_files(committed) == ["evaluation/results/benchmarks/cached_batch_scaling.json"]
    with pytest.raises(SystemExit):
        checked_output(parser, committed, overwrite=False)
    assert checked_output(parser, committed, overwrite=True) == committed
    assert checked_output(parser, tmp_path / "new.json", overwrite=False) == tmp_path / "new.json"
    assert committed_files(tmp_path) == [] and committed_files(COMMITTED_RESULTS / "no_such_study") == []


@pytest.mark.parametrize(
    "module, option, committed",
    [
        ("evaluation.benchmarks.quantized_retrieval", "--output-dir", "evaluation/results/quantized_retrieval"),
        ("evaluation.studies.nested_tokens", "--output-dir", "evaluation/results/nested_tokens"),
        ("evaluation.studies.nested_tokens_text", "--output-dir", "evaluation/results/nested_tokens/text"),
        ("evaluation.speed", "--output", "evaluation/results/speed/lit_imagenette.json"),
    ],
)
def test_study_and_benchmark_modules_refuse_committed_results(module, option, committed, monkeypatch, capsys):
    import importlib

    monkeypatch.chdir(REPO_ROOT)
    main_function = importlib.import_module(module).main
    arguments = [option, committed] + (["--model", "m", "--dataset", "d"] if module.endswith("speed") else [])
    with pytest.raises(SystemExit) as refused:
        main_function(arguments)
    assert refused.value.code == 2
    assert "holds results committed to the repository" in capsys.readouterr().err


def test_benchmark_scripts_refuse_committed_results():
    """Run as the README shows (``python evaluation/benchmarks/x.py`` from the repository root): refused at once."""
    import sys

    committed = "evaluation/results/benchmarks/vs_open_clip_train.json"
    done = subprocess.run([sys.executable, "evaluation/benchmarks/vs_open_clip_train.py", "--output", committed],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{committed} holds results committed to the repository" in done.stderr and "--overwrite" in done.stderr


def test_reuse_records_copies_only_missing_records(tmp_path):
    source, target = tmp_path / "committed", tmp_path / "out"
    (source / "derived").mkdir(parents=True)
    (source / "a.json").write_text('{"spec": 1}')
    (source / "derived" / "d.json").write_text('{"spec": 2}')
    target.mkdir()
    (target / "a.json").write_text('{"spec": "mine"}')
    assert reuse_records(source, target) == 1
    assert (target / "a.json").read_text() == '{"spec": "mine"}' and (target / "derived" / "d.json").is_file()
