"""``accelerate launch --multi_gpu --num_processes 2 -m st_oblique train``, the README's multi-GPU command, on two CPU
processes (gloo): the processes train one model together and only the first one writes the output folder."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli.cli_helpers import D, K, partial_folders
from tiny_models import SENTENCES

import st_oblique
from st_oblique import manifold


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate's launcher is not installed")
def test_accelerate_launch_two_cpu_processes(assets, tmp_path):
    output = tmp_path / "runs" / "ddp"
    command = [
        str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        "-m", "st_oblique", "train", "--backbone", "text", "--model", assets.bert, "--pairs", assets.pairs,
        "--num-tokens", str(K), "--token-dim", str(D), "--batch-size", "2", "--max-steps", "2",
        "--gather-across-devices", "--logging-steps", "1", "--no-progress", "--output-dir", str(output),
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Model and card:") == 1  # printed by the first process only

    report = json.loads((output / "training_report.json").read_text())
    training = report["training"]
    # 8 pairs, 2 rows per process and step: two processes cover the data once in 2 steps (one process: half)
    assert training["processes"] == 2 and training["steps"] == 2 and training["epochs"] == pytest.approx(1.0)
    assert len(training["curves"]["loss"]) == 2
    assert sorted(path.name for path in output.parent.iterdir()) == ["ddp"] and partial_folders(output.parent) == []
    model = st_oblique.load(str(output), device="cpu")
    assert manifold.is_on_manifold(model.encode(SENTENCES, convert_to_tensor=True), num_tokens=K)
