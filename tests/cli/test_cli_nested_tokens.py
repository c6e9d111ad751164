"""``st-oblique train --nested-tokens``: the run trains with ObliqueMatryoshkaLoss and records it."""

from __future__ import annotations

import json

import yaml
from cli.cli_helpers import TINY


def test_train_with_nested_tokens(cli, assets, tmp_path):
    output = tmp_path / "run"
    result = cli(
        "train",
        "--backbone",
        "text",
        "--model",
        assets.bert,
        "--pairs",
        str(assets.pairs),
        *TINY,
        "--max-steps",
        "2",
        "--nested-tokens",
        "1,2,4",
        "--output-dir",
        str(output),
    )
    assert result.code == 0, result.err
    report = json.loads((output / "training_report.json").read_text())
    assert report["training"]["loss"] == "ObliqueMatryoshkaLoss"
    assert yaml.safe_load((output / "train_config.yaml").read_text())["nested_tokens"] == "1,2,4"
    assert "ObliqueMatryoshkaLoss" in (output / "README.md").read_text()


def test_bad_nested_tokens_refused_before_training(cli, assets, tmp_path):
    for value in ("1,2,5", "1.5", "2,2"):
        result = cli(
            "train",
            "--backbone",
            "text",
            "--model",
            assets.bert,
            "--pairs",
            str(assets.pairs),
            *TINY,
            "--nested-tokens",
            value,
            "--output-dir",
            str(tmp_path / "run"),
        )
        assert result.code == 2 and "--nested-tokens" in result.err, result.err
        assert not (tmp_path / "run").exists()
