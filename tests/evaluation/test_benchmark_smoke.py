"""Smoke test of ``evaluation/benchmarks/vs_open_clip_train.py``: a few steps of open_clip_train and of
``st-oblique train`` (K=1 and K=16, and both trainers at equal text padding) on a tiny architecture and a tiny Flickr8k-like folder; it checks that every
number is produced, not its value (the numbers come from a run by hand)."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("open_clip_train.main")

SCRIPT = Path(__file__).resolve().parents[2] / "evaluation" / "benchmarks" / "vs_open_clip_train.py"


def tiny_flickr(folder: Path, images: int = 4, captions_per_image: int = 4) -> Path:
    """captions.tsv (Flickr8k's columns) + a tar of JPEGs under images_256/, as in ../shared/data/flickr8k_1k."""
    folder.mkdir()
    lines = ["image\tcaption_idx\tcaption"]
    with tarfile.open(folder / "images.tar", "w") as archive:
        for index in range(images):
            buffer = io.BytesIO()
            Image.new("RGB", (40, 40), (60 * index, 90, 200 - 40 * index)).save(buffer, "JPEG")
            info = tarfile.TarInfo(f"images_256/{index}.jpg")
            info.size = len(buffer.getvalue())
            archive.addfile(info, io.BytesIO(buffer.getvalue()))
            lines += [f"{index}.jpg\t{caption}\ta photo number {index}, caption {caption}" for caption in range(captions_per_image)]
    (folder / "captions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_the_benchmark_produces_its_numbers(tmp_path):
    output = tmp_path / "result.json"
    command = [
        sys.executable, str(SCRIPT), "--tiny", "--data", str(tiny_flickr(tmp_path / "flickr")),
        "--batch-size", "4", "--steps", "4", "--warmup-steps", "1", "--repeats", "1", "--workers", "0",
        "--output", str(output),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(output.read_text())
    for key in ("ratio_samples_per_second", "ratio_samples_per_second_k16", "ratio_samples_per_second_equal_padding",
                "ratio_peak_rss", "k16_time_per_sample_vs_k1"):
        assert math.isfinite(report[key]) and report[key] > 0, key
    assert set(report["runs"]) == {"open_clip_train", "st_oblique_k1", "st_oblique_k16", "open_clip_train_pad77",
                                   "st_oblique_k1_pad77"}
    for runs in report["runs"].values():
        assert len(runs) == 1 and runs[0]["steps_logged"] == 4 and runs[0]["peak_rss_mb"] > 0
    assert "load_average_before" in report["machine"] and report["settings"]["steps"] == 4
