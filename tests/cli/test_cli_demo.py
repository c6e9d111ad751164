"""``st-oblique demo``: the whole pipeline offline (here with few steps; the full demo is run by hand)."""

from __future__ import annotations

import json

import torch
from PIL import Image

import st_oblique
from st_oblique.app.demo import DEMO_EVAL_SET, QUICK_STEPS, digits_split


def test_demo_trains_evaluates_saves_and_reloads(demo_run):
    output, result = demo_run
    assert result.code == 0, result.err
    assert "a pipeline demonstration on scikit-learn's 8x8 digits, not a quality claim" in result.out
    for name in ("README.md", "modules.json", "training.png", "training_report.json", "demo_report.json",
                 "train_config.yaml", "eval/results.md", "eval_untrained/results.md"):
        assert (output / name).is_file(), name
    assert str(output) in result.out

    demo = json.loads((output / "demo_report.json").read_text())
    assert demo["steps"] == QUICK_STEPS and demo["chance"] == 0.1 and demo["test_images"] == 360
    assert demo["reload_max_abs_difference"] == 0.0
    report = json.loads((output / "training_report.json").read_text())
    trained = report["evaluation"]["trained"][0]
    assert trained["dataset"] == DEMO_EVAL_SET and trained["num_samples"] == 360
    assert demo["trained_accuracy"] == trained["metrics"]["acc1"]
    assert demo["untrained_accuracy"] == report["evaluation"]["untrained"][0]["metrics"]["acc1"]
    assert f"trained {demo['trained_accuracy']:.1%}" in result.out
    assert report["training"]["learnable_scale"] and len(report["training"]["curves"]["logit_scale"]) >= 2

    # the saved model gives the embeddings the demo evaluated: re-evaluating it reproduces the reported accuracy
    from st_oblique.data.datasets.registry import MNIST_TEMPLATES
    from st_oblique.evaluation import zeroshot_classification

    _, _, test_images, test_labels = digits_split()
    model = st_oblique.load(str(output), device="cpu")
    metrics = zeroshot_classification(model, list(test_images), test_labels.tolist(), [str(d) for d in range(10)],
                                      MNIST_TEMPLATES)
    assert metrics["acc1"] == demo["trained_accuracy"]
    assert torch.isfinite(model.encode([Image.fromarray(test_images[0])], convert_to_tensor=True)).all()


def test_demo_replaces_only_an_earlier_demo(cli, demo_run, tmp_path):
    other = tmp_path / "not-a-demo"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    result = cli("demo", "--quick", "--output-dir", other, "--no-progress")
    assert result.code == 2 and "--overwrite" in result.error_lines[0]
    assert [path.name for path in other.iterdir()] == ["notes.txt"]
