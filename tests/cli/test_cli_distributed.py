"""``accelerate launch --multi_gpu --num_processes 2 -m st_oblique train``, the README's multi-GPU command, on two CPU
processes (gloo), for every backbone family the command builds: the processes train one model together (their
parameters are bit-identical at the end, ``training_report.json``'s fingerprints) and only the first one writes the
output folder.

The families differ in what DDP sees: a BERT text tower has a pooler the oblique head never uses (DDP rejects a
trainable parameter without a gradient: the README's LiT recipe failed at step 2 this way); image-text batches run
the model once per column, each call through one tower; HF CLIP has projections the K-token heads replace. The
open_clip family runs in tests/cli/test_cli_sharded_distributed.py (streamed shards, the same checks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli.cli_helpers import D, K, partial_folders
from tiny_models import SENTENCES

import st_oblique
from st_oblique import manifold

pytestmark = pytest.mark.distributed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_launcher() -> str:
    """accelerate's launcher of the Python running the tests (pip installs it next to ``sys.executable``; PATH may
    not have it, or have another environment's)."""
    launcher = Path(sys.executable).with_name("accelerate")
    if not launcher.is_file():
        pytest.skip(f"accelerate's launcher is not installed next to {sys.executable}")
    return str(launcher)


def launch_two_processes(train_args: list, output: Path, cwd: Path, timeout: int = 600) -> tuple[dict, str, str]:
    """``accelerate launch`` 2 CPU processes of ``st-oblique train TRAIN_ARGS --output-dir OUTPUT``; returns the
    training report, stdout and stderr after checking that the run succeeded and that both processes ended with the same
    parameters."""
    command = [
        accelerate_launcher(), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        "-m", "st_oblique", "train", *map(str, train_args), "--logging-steps", "1", "--no-progress",
        "--output-dir", str(output),
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "different weights" not in result.stderr
    # the process group was released before exit (a group alive at interpreter shutdown can abort the process with
    # "terminate called without an active exception": st_oblique/training/process_group.py)
    assert "threads are still running" not in result.stderr
    report = json.loads((output / "training_report.json").read_text())
    fingerprints = report["training"]["parameter_fingerprints"]
    assert report["training"]["processes"] == 2 and len(fingerprints) == 2
    assert fingerprints[0] == fingerprints[1], "the two processes ended with different weights"
    return report, result.stdout, result.stderr


def test_text_backbone(assets, tmp_path):
    output = tmp_path / "runs" / "ddp"
    report, stdout, _ = launch_two_processes(
        ["--backbone", "text", "--model", assets.bert, "--pairs", assets.pairs, "--num-tokens", K, "--token-dim", D,
         "--batch-size", 2, "--max-steps", 2, "--gather-across-devices"],
        output, tmp_path,
    )
    assert stdout.count("Model and card:") == 1  # printed by the first process only
    training = report["training"]
    # 8 pairs, 2 rows per process and step: two processes cover the data once in 2 steps (one process: half)
    assert training["steps"] == 2 and training["epochs"] == pytest.approx(1.0)
    assert len(training["curves"]["loss"]) == 2
    # BERT's pooler never reaches the oblique loss: frozen before training, so DDP needs no unused-parameter search
    assert {name.rsplit("pooler.", 1)[-1] for name in report["parameters"]["frozen_unreached_by_loss"]} == {
        "dense.weight", "dense.bias"}
    assert sorted(path.name for path in output.parent.iterdir()) == ["ddp"] and partial_folders(output.parent) == []
    model = st_oblique.load(str(output), device="cpu")
    assert manifold.is_on_manifold(model.encode(SENTENCES, convert_to_tensor=True), num_tokens=K)


def test_dual_encoder_lit(assets, tmp_path):
    """The README's LiT recipe (a BERT text tower with its unused pooler, a locked image tower) on image-caption
    batches: the model runs twice per step, once per tower."""
    report, _, _ = launch_two_processes(
        ["--backbone", "dual", "--text-model", assets.bert, "--image-model", assets.vit, "--lock-image-tower",
         "--captions", assets.captions, "--images", assets.images_tar, "--num-tokens", K, "--token-dim", D,
         "--batch-size", 2, "--max-steps", 3, "--gather-across-devices", "--scale-mode", "learnable"],
        tmp_path / "lit", tmp_path,
    )
    assert report["training"]["steps"] == 3 and len(report["training"]["curves"]["loss"]) == 3
    unreached = report["parameters"]["frozen_unreached_by_loss"]
    assert unreached and all(".pooler." in name for name in unreached)


def test_hugging_face_clip(assets, tmp_path):
    report, _, _ = launch_two_processes(
        ["--backbone", "clip", "--model", assets.clip, "--captions", assets.captions, "--images", assets.images_tar,
         "--num-tokens", K, "--token-dim", D, "--batch-size", 2, "--max-steps", 3, "--gather-across-devices"],
        tmp_path / "clip", tmp_path,
    )
    assert report["training"]["steps"] == 3 and len(report["training"]["curves"]["loss"]) == 3
