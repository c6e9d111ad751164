"""Training runs through SentenceTransformerTrainer and the legacy fit, changes parameters and lowers the loss."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from sentence_transformers import InputExample, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from tiny_models import SENTENCES
from torch.utils.data import DataLoader

import st_oblique

PAIRS = {
    "anchor": SENTENCES,
    "positive": [s.replace("the", "a").replace("plays", "plays the") + " in the park" for s in SENTENCES],
}


def fixed_batch_loss(model, loss) -> float:
    model.eval()
    features = [model.preprocess(PAIRS["anchor"]), model.preprocess(PAIRS["positive"])]
    with torch.no_grad():
        value = loss(features, None).item()
    model.train()
    return value


@pytest.fixture
def model(tiny_bert_dir):
    torch.manual_seed(0)
    return st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=4, token_dim=8)


def trainable_snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def assert_changed(before: dict[str, torch.Tensor], model) -> None:
    after = dict(model.named_parameters())
    changed = [name for name, value in before.items() if not torch.equal(value, after[name])]
    assert any(name.startswith("1.heads") for name in changed), "the oblique head did not train"
    assert any(name.startswith("0.") for name in changed), "the backbone did not train"


def test_trainer_reduces_the_loss(model, tmp_path):
    loss = st_oblique.ObliqueContrastiveLoss(model, scale=4.0)
    before_loss, before = fixed_batch_loss(model, loss), trainable_snapshot(model)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=12, learning_rate=1e-2,
        report_to=[], save_strategy="no", logging_steps=1, seed=0, use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(PAIRS), loss=loss)
    trainer.train()
    assert trainer.state.global_step == 12
    assert fixed_batch_loss(model, loss) < 0.5 * before_loss
    assert_changed(before, model)


def test_legacy_fit_reduces_the_loss(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # fit writes checkpoints/ into the working directory
    loss = st_oblique.ObliqueContrastiveLoss(model, scale=4.0)
    before_loss, before = fixed_batch_loss(model, loss), trainable_snapshot(model)
    examples = [InputExample(texts=[a, p]) for a, p in zip(PAIRS["anchor"], PAIRS["positive"], strict=True)]
    loader = DataLoader(examples, batch_size=8, shuffle=False)
    model.fit(train_objectives=[(loader, loss)], epochs=12, optimizer_params={"lr": 1e-2}, warmup_steps=0, show_progress_bar=False)
    assert fixed_batch_loss(model, loss) < 0.5 * before_loss
    assert_changed(before, model)
