"""Smoke test of ``evaluation/benchmarks/encode_throughput.py`` on a tiny BERT: every model it compares (plain,
``first``, ``attention``, ``class_attention`` settings) is timed and every ratio is produced (the numbers themselves
come from a run by hand on all-MiniLM-L6-v2)."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tiny_models import SENTENCES

SCRIPT = Path(__file__).resolve().parents[2] / "evaluation" / "benchmarks" / "encode_throughput.py"


def test_the_benchmark_times_every_token_source(tmp_path, tiny_bert_dir):
    stsb = tmp_path / "sts-test.csv"
    pairs = enumerate(itertools.pairwise(SENTENCES))
    stsb.write_text("".join(f"g\tf\t2012\t{i}\t1.0\t{a}\t{b}\n" for i, (a, b) in pairs))
    output = tmp_path / "result.json"
    command = [
        sys.executable, str(SCRIPT), "--model", tiny_bert_dir, "--stsb", str(stsb), "--num-sentences", "12",
        "--num-tokens", "4", "--token-dim", "8", "--batch-size", "4", "--repeats", "1", "--threads", "1",
        "--class-attention", "2x16", "1x32", "--output", str(output),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCRIPT.parents[2]), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(output.read_text())
    expected = {"oblique_first", "oblique_attention", "oblique_class_attention_2x16", "oblique_class_attention_1x32"}
    assert set(report["cpu_relative_to_plain"]) == expected == set(report["relative_to_plain"])
    assert all(math.isfinite(value) and value > 0 for value in report["cpu_relative_to_plain"].values())
    assert report["command"].startswith("python ") and "--class-attention 2x16 1x32" in report["command"]
    assert set(report["uptime"]) == {"before", "after"}
