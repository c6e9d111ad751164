"""What multi-process training needs from st_oblique.training, in one process: the parameters the loss cannot reach
are found and frozen without side effects, a fingerprint tells two copies of a model apart, and the loss gets the
unwrapped model back after training. The 2-process runs: tests/cli/test_cli_distributed.py."""

from __future__ import annotations

import copy

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainingArguments
from tiny_models import SENTENCES, tiny_images, tiny_timm
from torch import nn

import st_oblique
from st_oblique.training import (
    ObliqueTrainer,
    freeze_unreached_parameters,
    parameter_fingerprint,
    parameter_fingerprints,
    unwrap_model_in_loss,
)

K, D = 2, 4


def trainer_for(model, dataset, tmp_path) -> ObliqueTrainer:
    loss = st_oblique.ObliqueContrastiveLoss(model)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, report_to="none",
        use_cpu=True, save_strategy="no", disable_tqdm=True,
    )
    return ObliqueTrainer(model=model, args=args, train_dataset=dataset, loss=loss)


def test_text_pairs_on_a_dual_encoder_freeze_the_pooler_and_the_image_side(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    image_model = tiny_timm(tmp_path / "timm", architecture="test_efficientnet")  # BatchNorm: buffers a forward moves
    model = st_oblique.oblique_dual_encoder(tiny_bert_dir, image_model, num_tokens=K, token_dim=D)
    pairs = Dataset.from_dict({"anchor": SENTENCES[:4], "positive": SENTENCES[4:8]})
    trainer = trainer_for(model, pairs, tmp_path)
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    rng = torch.get_rng_state()

    frozen = freeze_unreached_parameters(trainer)

    assert any(".pooler." in name for name in frozen)  # BERT's pooler: the oblique head reads the token states
    image_side = [name for name, _ in model.named_parameters() if "image" in name]
    assert image_side and set(image_side) <= set(frozen)  # no image in the data: the image tower and head
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable and not trainable & set(frozen) and all(".pooler." not in name for name in trainable)
    assert all(parameter.grad is None for parameter in model.parameters())  # the trial's gradients are gone
    assert torch.equal(torch.get_rng_state(), rng)  # dropout of the trial drew from a forked generator
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], rtol=0, atol=0, msg=name)


def test_freezing_changes_nothing_that_training_does(tiny_bert_dir, tmp_path):
    """Frozen parameters got no gradient anyway: two steps train to the same weights with and without the freeze."""
    data = Dataset.from_dict({"image": tiny_images(8, size=(32, 32)), "caption": SENTENCES})
    vit = tiny_timm(tmp_path / "vit", "test_vit", image_size=32)
    fingerprints = []
    for freeze in (True, False):
        torch.manual_seed(0)
        model = st_oblique.oblique_dual_encoder(tiny_bert_dir, vit, num_tokens=K, token_dim=D)
        trainer = trainer_for(model, data, tmp_path / str(freeze))
        if freeze:
            assert freeze_unreached_parameters(trainer)
        trainer.train()
        fingerprints.append(parameter_fingerprint(model))
    assert fingerprints[0] == fingerprints[1]


def test_fingerprints_tell_copies_apart():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    twin = copy.deepcopy(model)
    assert parameter_fingerprints(model) == [parameter_fingerprint(twin)]  # one process: its own
    twin[1].running_mean += 1  # buffers are each process's own (BatchNorm statistics): not compared
    assert parameter_fingerprint(model) == parameter_fingerprint(twin)
    with torch.no_grad():
        twin[0].weight[0, 0] += 1e-7
    assert parameter_fingerprint(model) != parameter_fingerprint(twin)


class Wrapper(nn.Module):
    """Stands for DistributedDataParallel: the model as ``module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def test_the_loss_gets_the_unwrapped_model_back(tiny_bert_dir, tmp_path):
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D)
    pairs = Dataset.from_dict({"anchor": SENTENCES[:4], "positive": SENTENCES[4:8]})
    trainer = trainer_for(model, pairs, tmp_path)
    trainer.loss = st_oblique.ObliqueMatryoshkaLoss(model, trainer.loss, token_counts=[1, 2])
    wrapped = Wrapper(model)
    trainer.model_wrapped = trainer.loss.model = trainer.loss.loss.model = wrapped
    unwrap_model_in_loss(trainer)
    assert trainer.model_wrapped is model and trainer.loss.model is model and trainer.loss.loss.model is model
