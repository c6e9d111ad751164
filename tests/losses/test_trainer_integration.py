"""The learnable scale through any trainer (no weight decay, saved with the model) and ObliqueTrainer (logged, resumed)."""

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
from st_oblique.losses.logit_scale_callback import LogitScaleCallback


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
        tmp_path / "run", max_steps=3, save_strategy="steps", save_steps=2, learning_rate_mapping={r"logit_scale": 0.05}
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


def test_several_losses_are_logged_by_name_and_cached_and_sigmoid_train(tiny_bert_dir, tmp_path):
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
        "triplets": ObliqueSigmoidLoss(model),
    }
    trainer = ObliqueTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=2, multi_dataset_batch_sampler="round_robin"),  # one step each
        train_dataset=datasets,
        loss=losses,
    )
    trainer.train()
    last = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    assert last["pairs_logit_scale"] == losses["pairs"].scale
    assert last["triplets_logit_scale"] == losses["triplets"].scale
    assert last["triplets_logit_bias"] == losses["triplets"].bias != -4.0  # trained from -scale * K
    # the model records the temperatures of the last loss built for it
    assert (model[1].logit_scale, model[1].logit_bias) == (losses["triplets"].scale, losses["triplets"].bias)
    for loss in losses.values():
        for parameter in loss.temperature_parameters().values():
            assert group_of(trainer.optimizer, parameter)["weight_decay"] == 0.0


def test_the_sigmoid_bias_is_saved_and_reloaded_with_the_model(tiny_bert_dir, tmp_path):
    model = oblique_model(tiny_bert_dir)
    loss = ObliqueSigmoidLoss(model, scale=1.5, bias=-3.25)
    with torch.no_grad():
        loss.logit_bias.fill_(-2.5)  # as if trained
    model.save(str(tmp_path / "model"))
    assert pooling_config(tmp_path / "model")["logit_bias"] == -2.5
    reloaded = st_oblique.load(str(tmp_path / "model"))
    assert (reloaded[1].logit_scale, reloaded[1].logit_bias) == (1.5, -2.5)
    assert st_oblique.describe_model(reloaded).logit_bias == -2.5
    assert re.search(r"^logit_bias +-2\.5$", st_oblique.describe_model(reloaded).to_text(), re.MULTILINE)


def test_the_callback_can_follow_a_loss_directly(tiny_bert_dir):
    model = oblique_model(tiny_bert_dir)
    loss = ObliqueSigmoidLoss(model, scale=2.0, bias=-1.0)
    callback = LogitScaleCallback({"train": loss})
    assert callback.values() == {"logit_scale": 2.0, "logit_bias": -1.0}
    assert model[1].logit_scale == 2.0
    assert math.isclose(loss.temperature, 0.5)
