"""``st-oblique train``: every backbone kind and data source, the outputs of a run, configs that repeat a run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from cli.cli_helpers import TINY, D, K, partial_folders
from safetensors.torch import load_file
from tiny_models import SENTENCES, tiny_images
from transformers import TimmWrapperModel

import st_oblique
from st_oblique import manifold


def load_report(run) -> dict:
    return json.loads((run / "training_report.json").read_text())


def test_text_run_writes_model_card_config_report_and_plot(text_run):
    for name in ("modules.json", "README.md", "train_config.yaml", "training_report.json", "training.png"):
        assert (text_run / name).is_file(), name
    assert partial_folders(text_run.parent) == []
    report = load_report(text_run)
    training = report["training"]
    assert training["steps"] == 4 and training["processes"] == 1
    assert training["loss"] == "ObliqueContrastiveLoss" and training["learnable_scale"]
    assert training["curves"]["step"] == [1, 2, 3, 4]
    scales = training["curves"]["logit_scale"]
    assert len(scales) == 4 and scales[-1] == pytest.approx(training["final_scale"], rel=1e-6)
    assert scales[-1] != pytest.approx(1.0, abs=1e-4)  # a learned scale with its own learning rate moved
    assert report["data"]["rows"] == 8 and report["data"]["columns"] == ["anchor", "positive"]

    model = st_oblique.load(str(text_run), device="cpu")
    embeddings = model.encode(SENTENCES, convert_to_tensor=True)
    assert embeddings.shape == (8, K * D) and manifold.is_on_manifold(embeddings, num_tokens=K)
    assert st_oblique.describe_model(model).logit_scale == pytest.approx(training["final_scale"], rel=1e-6)
    card = (text_run / "README.md").read_text()
    assert "ObliqueContrastiveLoss" in card and "ObliqueSentenceTransformer(" in card
    config = yaml.safe_load((text_run / "train_config.yaml").read_text())
    assert config["num_tokens"] == K and config["scale_mode"] == "learnable" and config["output_dir"] == str(text_run)


def test_saved_config_repeats_the_run_exactly(cli, text_run, tmp_path):
    """train_config.yaml holds every resolved option: the same run again gives the same weights."""
    output = tmp_path / "again"
    result = cli("train", "--config", text_run / "train_config.yaml", "--output-dir", output, "--save-steps", "none")
    assert result.code == 0, result.err
    for path in text_run.rglob("*.safetensors"):
        expected, repeated = load_file(path), load_file(output / path.relative_to(text_run))
        assert expected.keys() == repeated.keys()
        for name in expected:
            torch.testing.assert_close(repeated[name], expected[name], atol=0, rtol=0)


def test_open_clip_on_captions_and_tar_evaluated_before_and_after(image_run):
    report = load_report(image_run)
    evaluation = report["evaluation"]
    assert [record["dataset"] for record in evaluation["trained"]] == ["imagenette", "flickr8k_1k"]
    assert [record["model"] for record in evaluation["untrained"]] == ["run (untrained)"] * 2
    assert evaluation["chance"]["imagenette acc1"] == pytest.approx(1 / 3)  # the tiny copy has 3 classes
    assert evaluation["chance"]["flickr8k_1k image_retrieval_recall@1"] == pytest.approx(1 / 6)
    for folder in ("eval", "eval_untrained"):
        summary = json.loads((image_run / folder / "summary.json").read_text())
        assert len(summary["results"]) == 2 and (image_run / folder / "results.md").is_file()
    assert report["data"]["rows"] == 12  # 6 images x 2 captions
    assert report["config"]["model"] == "tiny-open-clip"  # named after the architecture file
    # the card shows the trained model's scores (not the untrained ones), as the summary has them
    card = (image_run / "README.md").read_text()
    imagenette = next(record for record in evaluation["trained"] if record["dataset"] == "imagenette")
    label = f"imagenette (zeroshot_classification, {imagenette['num_samples']} samples)"
    assert "st-oblique Evaluation" in card and f"| {label} | acc1 | {imagenette['metrics']['acc1']:.4f} |" in card
    model = st_oblique.load(str(image_run), device="cpu")
    assert manifold.is_on_manifold(model.encode(tiny_images(2), convert_to_tensor=True), num_tokens=K)


def test_clip_on_a_dataset_folder_with_the_sigmoid_loss(cli, assets, tmp_path):
    output = tmp_path / "clip"
    result = cli(
        "train", "--backbone", "clip", "--model", assets.clip, "--dataset", assets.hf_dataset, *TINY,
        "--max-steps", 2, "--loss", "sigmoid", "--logging-steps", 1, "--learning-rate", 1e-2, "--output-dir", output,
    )
    assert result.code == 0, result.err
    assert f"Model and card: {output}" in result.out
    training = load_report(output)["training"]
    assert training["loss"] == "ObliqueSigmoidLoss" and training["learnable_scale"]  # SigLIP learns both
    assert set(training["curves"]) >= {"logit_scale", "logit_bias", "loss"}
    assert yaml.safe_load((output / "train_config.yaml").read_text())["scale_mode"] == "learnable"


def test_dual_encoder_with_locked_image_tower_and_cached_loss(cli, assets, tmp_path):
    output = tmp_path / "dual"
    result = cli(
        "train", "--backbone", "dual", "--text-model", assets.bert, "--image-model", assets.vit,
        "--dataset", assets.hf_dataset, "--columns", "caption", "image", *TINY, "--max-steps", 2,
        "--loss", "cached", "--mini-batch-size", 2, "--lock-image-tower", "--learning-rate", 1e-2,
        "--output-dir", output,
    )
    assert result.code == 0, result.err
    report = load_report(output)
    assert report["training"]["loss"] == "CachedObliqueContrastiveLoss"
    assert report["data"]["columns"] == ["caption", "image"]
    # The locked timm tower is unchanged (the saved checkpoint is stock: transformers loads it) ...
    original = TimmWrapperModel.from_pretrained(assets.vit).state_dict()
    trained = TimmWrapperModel.from_pretrained(str(output / "image_0_ImageClassTokenTransformer")).state_dict()
    for name, value in original.items():
        torch.testing.assert_close(trained[name], value, atol=0, rtol=0)
    # ... while its new class tokens and the text tower trained.
    tokens = load_file(output / "image_0_ImageClassTokenTransformer" / "oblique_class_tokens" / "model.safetensors")
    assert any(bool(value.abs().sum() > 0) for value in tokens.values())
    assert report["parameters"]["frozen"] == sum(value.numel() for value in original.values())
    # The lock is recorded in the saved model: reloaded, it has the same trainable and frozen parameters.
    description = st_oblique.describe_model(st_oblique.load(str(output), device="cpu"))
    assert description.locked_towers == ["image"]
    assert description.trainable_parameters == report["parameters"]["trainable"]
    assert description.parameters - description.trainable_parameters == report["parameters"]["frozen"]


@pytest.mark.parametrize("backbone", ["clip", "dual"])
def test_late_class_tokens_train_on_every_backbone_kind(cli, assets, tmp_path, backbone):
    """--token-source class_attention: the towers stay as they are, K class tokens join after them."""
    output = tmp_path / backbone
    model_options = (
        ["--model", assets.clip] if backbone == "clip" else ["--text-model", assets.bert, "--image-model", assets.vit]
    )
    result = cli(
        "train", "--backbone", backbone, *model_options, "--dataset", assets.hf_dataset, "--columns", "caption",
        "image", *TINY, "--max-steps", 2, "--token-source", "class_attention", "--class-attention-layers", 1,
        "--learning-rate", 1e-2, "--output-dir", output,
    )
    assert result.code == 0, result.err
    model = st_oblique.load(str(output), device="cpu")
    pooling = model[1]
    assert set(pooling.token_source.values()) == {"class_attention"} and pooling.class_attention_layers == 1
    description = st_oblique.describe_model(model)
    assert all("join after the unchanged tower: 1 class-attention block" in tower.class_token_placement
               for tower in description.towers)
    assert "class_attention" in (output / "README.md").read_text()
    assert manifold.is_on_manifold(model.encode(SENTENCES[:2], convert_to_tensor=True), num_tokens=K)


def test_clip_backbones_refuse_token_sources_of_text_towers(cli, assets, tmp_path):
    result = cli("train", "--backbone", "clip", "--model", assets.clip, "--dataset", assets.hf_dataset, *TINY,
                 "--token-source", "first", "--output-dir", tmp_path / "run")
    assert result.code != 0 and "CLIP backbones take class_attention" in result.err


def test_config_file_values_and_command_line_precedence(cli, assets, tmp_path):
    """YAML and JSON config files set options; the command line wins; lists from the command line replace."""
    config = tmp_path / "run.json"
    config.write_text(json.dumps({
        "backbone": "text", "model": assets.bert, "pairs": str(assets.pairs), "num-tokens": 2, "token_dim": D,
        "batch_size": 4, "max_steps": 1, "freeze": ["pooler"], "progress": False,
        "output_dir": str(tmp_path / "from_file"),
    }))
    result = cli("train", "--config", config, "--num-tokens", 3, "--freeze", "embeddings.word", "--max-steps", 2)
    assert result.code == 0, result.err
    resolved = yaml.safe_load((tmp_path / "from_file" / "train_config.yaml").read_text())
    assert resolved["num_tokens"] == 3 and resolved["token_dim"] == D and resolved["max_steps"] == 2
    assert resolved["freeze"] == ["embeddings.word"]
    assert load_report(tmp_path / "from_file")["model"]["num_tokens"] == 3
