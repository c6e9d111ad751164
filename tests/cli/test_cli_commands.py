"""``st-oblique info``, ``eval``, ``compare`` and ``push`` (against the local fake Hub of tests/hub)."""

from __future__ import annotations

import json

import pytest
import yaml
from cli.cli_helpers import TINY
from hub.fake_hub import WRITE_TOKEN

import st_oblique


def test_info_text_and_json(cli, text_run):
    result = cli("info", text_run)
    assert result.code == 0, result.err
    report = json.loads((text_run / "training_report.json").read_text())
    scale = report["training"]["final_scale"]
    assert "4 x 8 (embedding size 32)" in result.out and f"{scale:.4g}" in result.out
    assert "dot: sum of 4 per-token cosines, range [-4, 4]" in result.out
    assert "4 steps of ObliqueContrastiveLoss" in result.out and "class tokens" in result.out
    assert "Built like `st-oblique train --backbone text` (st_oblique.oblique_text_model)." in result.out
    account = next(line for line in result.out.splitlines() if line.startswith("parameters ") and "trained" in line)
    total = report["parameters"]["total"]
    assert f"{total:,} in total = {report['parameters']['trainable']:,} trained + 0 frozen by the run" in account

    result = cli("info", text_run, "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    expected = st_oblique.describe_model(st_oblique.load(str(text_run), device="cpu")).to_dict()
    assert {key: info[key] for key in expected} == expected
    assert info["num_tokens"] == 4 and info["token_dim"] == 8 and info["logit_scale"] == pytest.approx(scale)
    assert info["training"]["steps"] == 4 and info["training"]["command"].startswith("st-oblique train")
    assert info["backbone_family"] == "text"


def test_the_card_shows_the_runs_training_time_and_task(demo_run):
    """The card's training time is the run's (not until the save, after the evaluations), and an image-text demo
    is not described with Sentence Transformers' text tasks."""
    from sentence_transformers.base.model_card import format_duration

    demo_output, _ = demo_run
    report = json.loads((demo_output / "training_report.json").read_text())
    readme = (demo_output / "README.md").read_text()
    assert f"- **Training**: {format_duration(report['training']['seconds'])}" in readme
    assert "can be used for text-to-image and image-to-text search" in readme and "paraphrase mining" not in readme


def test_info_parameter_account_adds_up(cli, demo_run):
    """One labelled account: as loaded (total = trainable + frozen) and in the run (total = trained + frozen by the
    run + never trainable). The demo freezes the word embeddings (--freeze, not saved) and its open_clip tower has
    a projection the oblique heads do not use (never trainable)."""
    demo_output, demo_result = demo_run
    assert demo_result.code == 0, demo_result.err
    info = json.loads(cli("info", demo_output, "--json").out)
    model = st_oblique.load(str(demo_output), device="cpu")
    total = sum(parameter.numel() for parameter in model.parameters())
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    assert (info["parameters"], info["trainable_parameters"]) == (total, trainable)
    run = info["training"]["parameters"]
    assert run["total"] == total == run["trainable"] + run["frozen"] + run["not_trainable"]
    assert run["frozen"] == model[0].model.token_embedding.weight.numel()  # the demo's --freeze token_embedding
    unused = sum(parameter.numel() for name, parameter in model.named_parameters() if not parameter.requires_grad)
    assert run["not_trainable"] == unused > 0  # open_clip's text projection and logit scale, unused by the heads
    text = cli("info", demo_output).out
    assert f"{total:,} in total = {trainable:,} trainable + {total - trainable:,} frozen (as loaded)" in text
    assert (f"{total:,} in total = {run['trainable']:,} trained + {run['frozen']:,} frozen by the run + "
            f"{run['not_trainable']:,} never trainable") in text


def test_info_and_push_errors(cli, tmp_path):
    result = cli("info", tmp_path)
    assert result.code == 2 and "is not a saved Sentence Transformers model" in result.error_lines[0]
    result = cli("info", tmp_path / "missing" / "model")
    assert result.code == 2 and "Model not found" in result.error_lines[0]
    result = cli("push", tmp_path, "me/not-a-model")  # refused before anything is uploaded
    assert result.code == 2 and "no modules.json" in result.error_lines[0]


def test_eval_two_models_side_by_side_and_compare(cli, assets, image_run, tmp_path):
    output = tmp_path / "eval"
    untrained_clip = tmp_path / "clip_model"
    st_oblique.oblique_clip(assets.clip, num_tokens=4, token_dim=8, device="cpu").save(str(untrained_clip))
    result = cli("eval", "--model", f"trained={image_run}", "--model", f"clip={untrained_clip}",
                 "--dataset", "imagenette", "--data-root", assets.data_root, "--output-dir", output, "--no-progress")
    assert result.code == 0, result.err
    assert "| trained | clip |" in result.out
    summary = json.loads((output / "summary.json").read_text())
    assert [record["model"] for record in summary["results"]] == ["trained", "clip"]
    # the trained model's numbers are those of its training run's own evaluation (same model, same data)
    trained = json.loads((image_run / "eval" / "summary.json").read_text())["results"][0]
    assert summary["results"][0]["metrics"] == trained["metrics"]
    saved = yaml.safe_load((output / "eval_config.yaml").read_text())
    assert saved["models"] == [f"trained={image_run}", f"clip={untrained_clip}"] and saved["datasets"] == ["imagenette"]

    # the saved options repeat the evaluation
    result = cli("eval", "--config", output / "eval_config.yaml", "--output-dir", tmp_path / "again")
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["results"][1]["metrics"] == summary["results"][1]["metrics"]

    result = cli("compare", image_run / "eval_untrained", image_run / "eval", "--output-dir", tmp_path / "cmp")
    assert result.code == 0, result.err
    table = (tmp_path / "cmp" / "results.md").read_text()
    assert "run (untrained)" in table and "| run |" in table.replace("**", "")


def test_eval_errors(cli, assets, text_run, tmp_path):
    result = cli("eval", "--dataset", "imagenette", "--output-dir", tmp_path / "x")
    assert result.code == 2 and "Give at least one model" in result.error_lines[0]
    result = cli("eval", "--model", tmp_path / "nothing", "--dataset", "imagenette", "--output-dir", tmp_path / "x")
    assert result.code == 2 and "Model not found" in result.error_lines[0]
    result = cli("eval", "--model", text_run, "--dataset", "no_such_set", "--output-dir", tmp_path / "x")
    assert result.code == 2 and "Unknown dataset 'no_such_set'" in result.error_lines[0]
    assert not (tmp_path / "x").exists()


def test_push_a_trained_folder_with_its_scores(cli, hub, image_run):
    result = cli("push", image_run, "me/oblique-tiny", "--token", WRITE_TOKEN, "--private")
    assert result.code == 0, result.err
    assert "Pushed" in result.out and "eval/summary.json" in result.out
    repo = hub.repos["me/oblique-tiny"]
    files = repo.resolve("main").files
    assert repo.private and "modules.json" in files and "model.safetensors" in files
    card = files["README.md"].decode()
    trained = json.loads((image_run / "eval" / "summary.json").read_text())["results"][0]
    assert "st-oblique Evaluation" in card and f"{trained['metrics']['acc1']:.4f}" in card
    assert 'ObliqueSentenceTransformer("me/oblique-tiny")' in card
    # the pushed model loads and equals the local one
    local = st_oblique.load(str(image_run), device="cpu")
    pushed = st_oblique.load("me/oblique-tiny", device="cpu", token=WRITE_TOKEN)
    texts = ["a dog runs in the park", "a red car"]
    assert (pushed.encode(texts, convert_to_tensor=True) - local.encode(texts, convert_to_tensor=True)).abs().max() < 1e-6


def test_push_failure_is_one_line_and_train_push(cli, hub, assets, tmp_path, text_run):
    before = sorted(path.name for path in text_run.iterdir())
    result = cli("push", text_run, "me/denied", "--token", "hf_wrong")
    assert result.code == 1 and len(result.error_lines) == 1
    assert "401" in result.error_lines[0] and "hf auth login" in result.error_lines[0]
    assert sorted(path.name for path in text_run.iterdir()) == before and "me/denied" not in hub.repos

    output = tmp_path / "pushed"
    result = cli("train", "--backbone", "text", "--model", assets.bert, "--pairs", assets.pairs, *TINY,
                 "--max-steps", 1, "--output-dir", output, "--push-to-hub", "me/from-train")
    assert result.code == 1  # no token: the run is kept, the push is explained
    assert "The trained model is saved in" in result.error_lines[0] and "st-oblique push" in result.error_lines[0]
    assert (output / "modules.json").is_file()
    result = cli("push", output, "me/from-train", "--token", WRITE_TOKEN)
    assert result.code == 0, result.err
    assert "modules.json" in hub.repos["me/from-train"].resolve("main").files
