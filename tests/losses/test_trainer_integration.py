"""The model's learnable scale through any trainer: trained without weight decay, saved, resumed (plain trainer, fit,
ObliqueTrainer), logged by ObliqueTrainer; folders saved before the scale moved into the model still load."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from losses.loss_cases import oblique_model, text_batch
from sentence_transformers import InputExample, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from torch.utils.data import DataLoader
from transformers import TrainerCallback

import st_oblique
from st_oblique import CachedObliqueContrastiveLoss, ObliqueContrastiveLoss, ObliqueSigmoidLoss, ObliqueTrainer
from st_oblique.training.logit_scale_callback import LogitScaleCallback


def training_args(output_dir: Path, **overrides) -> SentenceTransformerTrainingArguments:
    options = dict(
        output_dir=str(output_dir), per_device_train_batch_size=4, learning_rate=1e-2, weight_decay=0.1,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
    )
    return SentenceTransformerTrainingArguments(**{**options, **overrides})


def group_of(optimizer, parameter) -> dict:
    return next(group for group in optimizer.param_groups if any(p is parameter for p in group["params"]))


def pooling_config(model_dir: Path) -> dict:
    modules = json.loads((model_dir / "modules.json").read_text())
    path = next(entry["path"] for entry in modules if entry["type"].endswith("ObliquePooling"))
    return json.loads((model_dir / path / "config.json").read_text())


class ScaleAtSave(TrainerCallback):
    """Records the loss's scale whenever the trainer saves a checkpoint (what the checkpoint must hold)."""

    def __init__(self, loss):
        self.loss, self.scales = loss, {}

    def on_save(self, args, state, control, **kwargs):
        self.scales[state.global_step] = self.loss.scale


def test_the_plain_trainer_trains_the_scale_without_weight_decay_and_saves_it(tiny_bert_dir, tmp_path):
    model = oblique_model(tiny_bert_dir)
    loss = ObliqueContrastiveLoss(model, scale=2.0, learnable_scale=True)
    anchors, positives, _ = text_batch()
    args = training_args(
        tmp_path / "run", max_steps=3, save_strategy="steps", save_steps=2, learning_rate_mapping={r"\.temperature\.": 0.05}
    )
    at_save = ScaleAtSave(loss)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict({"anchor": anchors, "positive": positives}), loss=loss,
        callbacks=[at_save],
    )
    trainer.train()

    scale_group = group_of(trainer.optimizer, loss.logit_scale.log_scale_bias)
    assert scale_group["weight_decay"] == 0.0
    assert scale_group["initial_lr"] == 0.05  # its own learning rate, through ST's learning_rate_mapping
    assert group_of(trainer.optimizer, model[1].heads["default"].projection)["weight_decay"] == 0.1
    assert loss.scale != 2.0
    # no logging without ObliqueTrainer or the callback (what the loss docstring says)
    assert all("logit_scale" not in entry for entry in trainer.state.log_history)
    # the checkpoint at step 2 records the scale of step 2, the final model the final scale
    assert pooling_config(tmp_path / "run" / "checkpoint-2")["logit_scale"] == at_save.scales[2] != loss.scale
    assert model[1].logit_scale == loss.scale
    model.save(str(tmp_path / "final"))
    assert pooling_config(tmp_path / "final")["logit_scale"] == loss.scale
    assert st_oblique.load(str(tmp_path / "final"))[1].logit_scale == loss.scale


def test_the_plain_trainer_resumes_the_scale_from_a_checkpoint(tiny_bert_dir, tmp_path):
    anchors, positives, _ = text_batch()
    dataset = Dataset.from_dict({"anchor": anchors, "positive": positives})
    args = training_args(tmp_path / "run", max_steps=3, save_strategy="steps", save_steps=2)
    model = oblique_model(tiny_bert_dir)
    loss = ObliqueContrastiveLoss(model, scale=2.0, learnable_scale=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss).train()

    # A fresh model and loss (scale 2.0 again) resumed at step 2 repeat step 3: the checkpoint holds the scale.
    resumed_model = oblique_model(tiny_bert_dir)
    resumed_loss = ObliqueContrastiveLoss(resumed_model, scale=2.0, learnable_scale=True)
    resumed = SentenceTransformerTrainer(model=resumed_model, args=args, train_dataset=dataset, loss=resumed_loss)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert resumed_loss.scale == pytest.approx(loss.scale, rel=1e-6) and loss.scale != 2.0
    assert resumed_model[1].temperature.learnable and resumed_model[1].max_logit_scale == 100.0


def test_oblique_trainer_logs_the_scale_and_restores_it_when_resuming(tiny_bert_dir, tmp_path):
    model = oblique_model(tiny_bert_dir)
    loss = ObliqueContrastiveLoss(model, scale=2.0, learnable_scale=True)
    anchors, positives, _ = text_batch()
    args = training_args(tmp_path / "run", max_steps=3, save_strategy="steps", save_steps=2)
    trainer = ObliqueTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict({"anchor": anchors, "positive": positives}), loss=loss
    )
    assert isinstance(trainer.callback_handler.callbacks[1], LogitScaleCallback)
    trainer.train()
    logged = [entry["logit_scale"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3 and logged[-1] == loss.scale != 2.0
    assert pooling_config(tmp_path / "run" / "checkpoint-2")["logit_scale"] == logged[1]

    # Resuming from the step-2 checkpoint with a fresh loss restores the scale and repeats step 3 exactly.
    resumed_model = oblique_model(tiny_bert_dir)
    resumed_loss = ObliqueContrastiveLoss(resumed_model, scale=2.0, learnable_scale=True)
    resumed = ObliqueTrainer(model=resumed_model, args=args, train_dataset=trainer.train_dataset, loss=resumed_loss)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert resumed_loss.scale == pytest.approx(loss.scale, rel=1e-6)


def test_fit_keeps_the_scale_out_of_weight_decay_and_records_it(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # fit's trainer may create its default output folder in the working directory
    model = oblique_model(tiny_bert_dir)
    loss = ObliqueContrastiveLoss(model, scale=4.0, learnable_scale=True)
    anchors, positives, _ = text_batch()
    loader = DataLoader([InputExample(texts=[a, p]) for a, p in zip(anchors, positives, strict=True)], batch_size=4)
    # AdamW's decoupled decay would multiply log(scale) by 1 - lr * weight_decay = 0.5 per step: 4 -> 2.0 -> 1.4.
    model.fit(
        train_objectives=[(loader, loss)], epochs=1, weight_decay=50.0, optimizer_params={"lr": 1e-2},
        warmup_steps=0, show_progress_bar=False,
    )
    assert 3.8 < loss.scale < 4.2 and loss.scale != 4.0
    assert model[1].logit_scale == loss.scale
    model.save(str(tmp_path / "fitted"))
    assert pooling_config(tmp_path / "fitted")["logit_scale"] == loss.scale
    reloaded = st_oblique.load(str(tmp_path / "fitted"))
    assert reloaded[1].logit_scale == loss.scale and reloaded[1].learnable_logit_scale


def test_fit_resumes_the_scale_from_its_checkpoint(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    anchors, positives, _ = text_batch()
    examples = [InputExample(texts=[a, p]) for a, p in zip(anchors, positives, strict=True)]

    def fit(model, loss, resume: bool) -> None:
        loader = DataLoader(examples, batch_size=4, shuffle=False)  # 2 steps per epoch, 4 in all
        model.fit(
            train_objectives=[(loader, loss)], epochs=2, optimizer_params={"lr": 1e-2}, warmup_steps=0,
            show_progress_bar=False, checkpoint_path=str(tmp_path / "checkpoints"), checkpoint_save_steps=3,
            resume_from_checkpoint=resume,
        )

    model = oblique_model(tiny_bert_dir)
    loss = ObliqueContrastiveLoss(model, scale=4.0, learnable_scale=True)
    fit(model, loss, resume=False)
    assert (tmp_path / "checkpoints" / "checkpoint-3").is_dir()
    resumed_model = oblique_model(tiny_bert_dir)
    resumed_loss = ObliqueContrastiveLoss(resumed_model, scale=4.0, learnable_scale=True)
    fit(resumed_model, resumed_loss, resume=True)  # from checkpoint-3: only step 4 runs
    assert resumed_loss.scale == pytest.approx(loss.scale, rel=1e-6) and loss.scale != 4.0


def test_fit_refuses_an_empty_data_loader_before_training(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = oblique_model(tiny_bert_dir)
    loss = ObliqueContrastiveLoss(model)
    with pytest.raises(st_oblique.TrainingDataError, match=r"Training objective 0 of fit\(\) has an empty data loader"):
        model.fit(train_objectives=[(DataLoader([], batch_size=4), loss)], epochs=1, show_progress_bar=False)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_several_losses_share_the_model_scale_which_is_logged_once(tiny_bert_dir, tmp_path):
    model = oblique_model(tiny_bert_dir)
    anchors, positives, negatives = text_batch()
    datasets = DatasetDict(
        {
            "pairs": Dataset.from_dict({"anchor": anchors, "positive": positives}),
            "triplets": Dataset.from_dict({"anchor": anchors, "positive": positives, "negative": negatives}),
        }
    )
    losses = {
        "pairs": CachedObliqueContrastiveLoss(model, scale=2.0, learnable_scale=True, mini_batch_size=2),
        "triplets": ObliqueSigmoidLoss(model),  # keeps the model's scale (2.0, learned), adds a bias -2.0 * K
    }
    assert model[1].logit_bias == -2.0 * 4
    trainer = ObliqueTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=2, multi_dataset_batch_sampler="round_robin"),  # one step each
        train_dataset=datasets,
        loss=losses,
    )
    trainer.train()
    last = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    # one temperature, the model's: both losses read it, the log shows it once
    assert last["logit_scale"] == losses["pairs"].scale == losses["triplets"].scale == model[1].logit_scale != 2.0
    assert last["logit_bias"] == losses["triplets"].bias == model[1].logit_bias != -8.0
    for loss in losses.values():
        for parameter in loss.temperature_parameters().values():
            assert group_of(trainer.optimizer, parameter)["weight_decay"] == 0.0


def test_the_sigmoid_bias_is_saved_and_reloaded_with_the_model(tiny_bert_dir, tmp_path):
    model = oblique_model(tiny_bert_dir)
    loss = ObliqueSigmoidLoss(model, scale=1.5, bias=-3.25)
    with torch.no_grad():
        loss.logit_scale.logit_bias.fill_(-2.5)  # as if trained
    model.save(str(tmp_path / "model"))
    assert pooling_config(tmp_path / "model")["logit_bias"] == -2.5
    reloaded = st_oblique.load(str(tmp_path / "model"))
    assert (reloaded[1].logit_scale, reloaded[1].logit_bias) == (1.5, -2.5)
    assert reloaded[1].learnable_logit_scale and reloaded[1].learnable_logit_bias
    assert st_oblique.describe_model(reloaded).logit_bias == -2.5
    assert re.search(r"^logit_bias +-2\.5$", st_oblique.describe_model(reloaded).to_text(), re.MULTILINE)


def test_the_callback_logs_the_models_temperature_with_a_plain_trainer(tiny_bert_dir, tmp_path):
    model = oblique_model(tiny_bert_dir)
    loss = ObliqueSigmoidLoss(model, scale=2.0, bias=-1.0)
    anchors, positives, _ = text_batch()
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args(tmp_path, max_steps=2), loss=loss, callbacks=[LogitScaleCallback()],
        train_dataset=Dataset.from_dict({"anchor": anchors, "positive": positives}),
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["logit_scale"] for entry in logged][-1] == model[1].logit_scale != 2.0
    assert [entry["logit_bias"] for entry in logged][-1] == model[1].logit_bias != -1.0
    assert math.isclose(loss.temperature, 1 / loss.scale)


def test_a_fixed_scale_is_not_trained_nor_logged(tiny_bert_dir, tmp_path):
    model = oblique_model(tiny_bert_dir)
    loss = ObliqueContrastiveLoss(model, scale=3.0)
    anchors, positives, _ = text_batch()
    trainer = ObliqueTrainer(model=model, args=training_args(tmp_path, max_steps=1), loss=loss,
                             train_dataset=Dataset.from_dict({"anchor": anchors, "positive": positives}))
    trainer.train()
    assert model[1].logit_scale == 3.0 and loss.temperature_parameters() == {}
    assert all("logit_scale" not in entry for entry in trainer.state.log_history)
    assert "temperature.log_scale_bias" in model[1].state_dict()  # saved with the weights (a buffer)


def test_a_folder_saved_before_the_scale_moved_into_the_model_loads_with_its_scale_and_embeddings():
    # Saved by st-oblique at 0ba1cb3 (tests/fixtures/make_saved_before_model_scale.py): the scale and bias are only
    # in ObliquePooling's config, its weights have no temperature tensors.
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "saved_before_model_scale"
    record = json.loads((folder / "embeddings.json").read_text())
    assert "temperature.log_scale_bias" not in safetensors_keys(folder / "1_ObliquePooling" / "model.safetensors")
    model = st_oblique.load(str(folder))
    assert (model[1].logit_scale, model[1].logit_bias) == (record["logit_scale"], record["logit_bias"])
    assert st_oblique.describe_model(model).logit_scale == record["logit_scale"]
    torch.testing.assert_close(
        model.encode(record["sentences"], convert_to_tensor=True), torch.tensor(record["embeddings"]), atol=1e-6, rtol=0
    )
    loss = ObliqueSigmoidLoss(model)  # continues from the recorded values
    assert (loss.scale, loss.bias) == (record["logit_scale"], record["logit_bias"])


def safetensors_keys(path: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return set(handle.keys())
