"""``python -m evaluation.speed``: the harness and CLIP_benchmark's loop timed on the same model and data, with the
same metrics at K=1 and the measurement written to a JSON file."""

from __future__ import annotations

import json

import pytest

from evaluation.speed import main

pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")

TEMPLATES = ["a photo of the number {c}.", "the digit {c}"]


def test_speed_command_writes_its_measurement(tiny_clip_dir, tmp_path, capsys):
    output = tmp_path / "speed" / "tiny.json"
    argv = ["--model", f"tiny={tiny_clip_dir}", "--dataset", "sklearn_digits", "--max-samples", "16"]
    argv += ["--batch-size", "8", "--repeats", "1", "--output", str(output)]
    for template in TEMPLATES:
        argv += ["--template", template]
    main(argv)
    report = json.loads(output.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert (report["model"], report["dataset"], report["num_images"], report["num_templates"]) == (
        "tiny",
        "sklearn_digits",
        16,
        2,
    )
    assert report["num_tokens"] == 1 and report["pretrained"].startswith("w-")
    # an ordinary cosine model (K=1): both implementations must give the very same numbers
    assert report["metrics_identical"] and report["metrics"]["harness"] == report["metrics"]["clip_benchmark"]
    assert [len(times) for times in report["seconds"].values()] == [1, 1]
    speeds = report["images_per_second"]
    assert speeds["harness"] > 0 and speeds["clip_benchmark"] > 0
    for name, times in report["seconds"].items():  # one run each: images/s is images over that run's time
        assert speeds[name] == pytest.approx(16 / times[0])
    assert report["ratio_harness_over_clip_benchmark"] == pytest.approx(speeds["harness"] / speeds["clip_benchmark"])
    assert set(report["load_average_1_5_15min"]) == {"before", "after"}
    assert report["command"].startswith("python -m evaluation.speed --model tiny=")
