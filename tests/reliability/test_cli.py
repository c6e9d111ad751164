"""``st-oblique train`` under faults: bad data in a Hugging Face dataset, a full disk, a second run into the same
output folder, SIGINT/SIGTERM mid-training. Exit status and one line on stderr; the output folder is written
completely or not at all, inputs are unchanged, no staging folder, lock or empty checkpoint folder is left."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset
from reliability.reliability_helpers import TINY, digest, leftovers, run_cli
from tiny_models import SENTENCES

import st_oblique
from st_oblique.output_folder import lock_output_dir

REPO = Path(__file__).resolve().parents[2]


def train_args(bert, data, output, *extra):
    return ["train", "--backbone", "text", "--model", bert, *data, *TINY, "--max-steps", 1, "--output-dir", output, *extra]


@pytest.fixture(scope="module")
def bad_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_datasets")
    pairs = {"anchor": SENTENCES, "positive": SENTENCES[1:] + SENTENCES[:1]}
    made = {
        "none": {"anchor": [*SENTENCES[:5], None, *SENTENCES[6:]], "positive": pairs["positive"]},
        "idx": {**pairs, "idx": list(range(8))},
    }
    for name, columns in made.items():
        Dataset.from_dict(columns).save_to_disk(str(root / name))
    return root


@pytest.mark.parametrize(
    ("name", "extra", "expected"),
    [
        ("none", [], "Row 5 of train_dataset has no value (None) in column 'anchor'"),
        ("idx", ["--columns", "anchor", "positive", "idx"], "Column 'idx' of train_dataset holds int64 values"),
    ],
)
def test_bad_hf_dataset(name, extra, expected, bad_datasets, tiny_bert_dir, tmp_path, capsys):
    before = digest(bad_datasets / name)
    output = tmp_path / "runs" / "out"
    result = run_cli(capsys, *train_args(tiny_bert_dir, ["--dataset", bad_datasets / name, *extra], output))
    assert result.code == 2, result.err
    assert len(result.error_lines) == 1 and expected in result.error_lines[0], result.err
    assert not output.exists() and leftovers(tmp_path / "runs") == []
    assert not (tmp_path / "runs" / "out-checkpoints").exists()
    assert digest(bad_datasets / name) == before


def test_full_disk_while_saving(tiny_bert_dir, pairs_file, tmp_path, capsys, monkeypatch):
    """The save fails with ENOSPC (a monkeypatched write; see test_full_tmpfs for a real full file system)."""

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st_oblique.ObliqueSentenceTransformer, "save", full)
    before = digest(pairs_file)
    output = tmp_path / "out"
    result = run_cli(capsys, *train_args(tiny_bert_dir, ["--pairs", pairs_file], output))
    assert result.code == 2, result.err
    assert result.error_lines == [
        f"st-oblique train: error: The disk is full (No space left on device) while writing {output}: nothing was "
        "written there and the partial files were removed. Free some space or choose an output folder on another disk."
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-checkpoints"] or list(tmp_path.iterdir()) == []
    assert not output.exists() and leftovers(tmp_path) == [] and digest(pairs_file) == before


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); test_full_disk_while_saving covers ENOSPC")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_tmpfs(tiny_bert_dir, pairs_file, tiny_tmpfs, capsys):
    output = tiny_tmpfs / "out"
    result = run_cli(capsys, *train_args(tiny_bert_dir, ["--pairs", pairs_file], output, "--checkpoint-dir",
                                         tiny_tmpfs.parent / "ckpt"))
    assert result.code == 2, result.err
    assert "The disk is full" in result.error_lines[0] and f"while writing {output}" in result.error_lines[0]
    assert list(tiny_tmpfs.iterdir()) == []


def test_second_run_into_a_locked_folder(tiny_bert_dir, pairs_file, tmp_path, capsys):
    output = tmp_path / "out"
    with lock_output_dir(output):
        result = run_cli(capsys, *train_args(tiny_bert_dir, ["--pairs", pairs_file], output))
    assert result.code == 2
    assert result.error_lines == [
        f"st-oblique train: error: Another run (process {os.getpid()}) is writing the output folder {output}; wait "
        "for it to finish or choose another output folder."
    ]
    assert list(tmp_path.iterdir()) == []


def _start_train(bert, pairs, output, steps, *extra):
    command = [sys.executable, "-m", "st_oblique", *map(str, train_args(bert, ["--pairs", pairs], output, *extra))]
    command[command.index("--max-steps") + 1] = str(steps)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_train_commands_into_one_folder(tiny_bert_dir, pairs_file, tmp_path, capsys):
    """Two real ``st-oblique train`` runs: the first wins and writes a complete folder, the second says why not."""
    output = tmp_path / "out"
    first = _start_train(tiny_bert_dir, pairs_file, output, 40)
    try:
        _wait_for(lambda: (tmp_path / ".out.lock").exists(), first)
        second = run_cli(capsys, *train_args(tiny_bert_dir, ["--pairs", pairs_file], output))
        assert second.code == 2
        assert f"Another run (process {first.pid}) is writing the output folder {output}" in second.error_lines[0]
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert (output / "modules.json").is_file() and (output / "training_report.json").is_file()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_training(sig, tiny_bert_dir, pairs_file, tmp_path):
    """Stopped after its first checkpoint: exit 130, no output folder, every checkpoint left is complete."""
    output, checkpoints = tmp_path / "out", tmp_path / "out-checkpoints"
    before = digest(pairs_file)
    process = _start_train(tiny_bert_dir, pairs_file, output, 100000, "--save-steps", 1, "--save-total-limit", 3)
    try:
        _wait_for(lambda: (checkpoints / "checkpoint-1" / "trainer_state.json").exists(), process)
        process.send_signal(sig)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "st-oblique train: interrupted; nothing was written to the output folder." in err
    assert not output.exists() and leftovers(tmp_path) == []
    for checkpoint in checkpoints.iterdir():
        assert (checkpoint / "trainer_state.json").is_file(), f"half-written {checkpoint}"
        assert st_oblique.load(str(checkpoint)).encode(["a dog"]).shape == (1, 32)
    assert digest(pairs_file) == before
