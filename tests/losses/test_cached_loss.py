"""CachedObliqueContrastiveLoss gives the uncached loss and gradients, the learnable scale's included."""

from __future__ import annotations

import pytest
import torch
from losses.loss_cases import oblique_model, text_batch

from st_oblique import CachedObliqueContrastiveLoss, ObliqueContrastiveLoss


@pytest.fixture(scope="module")
def model(tiny_bert_dir):
    # eval: no dropout, so both losses see the same network (GradCache replays dropout masks per mini-batch,
    # which differ from the masks of one full-batch forward). float64: the comparison then tests GradCache's
    # algebra, not float32 rounding, which differs with the summation order of the chunks.
    return oblique_model(tiny_bert_dir).eval().double()


def batches(model, num_columns: int) -> list[list[dict]]:
    """Two different batches of ``num_columns`` columns (the second for gradient accumulation)."""
    columns = text_batch()[:num_columns]
    swapped = [columns[1], columns[0], *columns[2:]]
    return [[model.preprocess(column) for column in batch] for batch in (columns, swapped)]


def train_step(model, loss, inputs: list[list[dict]], factor: float) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Gradient accumulation over ``inputs`` with the outer backward factor ``factor / len(inputs)``."""
    loss.double().zero_grad()
    values = []
    for features in inputs:
        value = loss(features, None)
        (factor / len(inputs) * value).backward()
        values.append(value.item())
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    for name, parameter in loss.temperature_parameters().items():
        grads[f"loss.{name}"] = parameter.grad.clone()
    return values, grads


def assert_same_gradients(cached: dict, uncached: dict) -> None:
    assert cached.keys() == uncached.keys()
    for name in uncached:
        # 1e-5 relative; the absolute floor covers gradients that are 0 up to rounding (attention key biases)
        torch.testing.assert_close(cached[name], uncached[name], rtol=1e-5, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize(
    ("learnable", "num_columns", "accumulation", "factor", "mini_batch_size"),
    [
        (True, 2, 1, 1.0, 3),  # plain step; 3 does not divide the batch of 8
        (True, 3, 2, 1.0, 4),  # gradient accumulation 2, hard negatives
        (True, 2, 1, 0.5, 2),  # a non-unit outer factor (AMP's loss scale, a loss weight)
        (True, 3, 2, 64.0, 8),  # both, one mini-batch
        (False, 2, 2, 0.5, 3),  # fixed scale
    ],
)
def test_cached_equals_uncached(model, learnable, num_columns, accumulation, factor, mini_batch_size):
    inputs = batches(model, num_columns)[:accumulation]
    options = {"scale": 2.0, "learnable_scale": learnable}
    uncached_values, uncached_grads = train_step(model, ObliqueContrastiveLoss(model, **options), inputs, factor)
    cached = CachedObliqueContrastiveLoss(model, mini_batch_size=mini_batch_size, **options)
    cached_values, cached_grads = train_step(model, cached, inputs, factor)
    assert cached_values == pytest.approx(uncached_values, rel=1e-6)
    assert_same_gradients(cached_grads, uncached_grads)
    assert ("loss.logit_scale" in cached_grads) == learnable


class NaiveCachedLoss(CachedObliqueContrastiveLoss):
    """Keeps the learnable scale inside GradCache's loss step: its gradient is taken during the forward pass."""

    def forward(self, sentence_features, labels=None):
        return self.forward_cached(list(sentence_features), labels)

    def calculate_loss(self, reps, labels=None, *, with_backward=False):
        embeddings = [torch.cat(column) for column in reps]
        rows = torch.arange(len(embeddings[0]))
        from st_oblique.losses.contrastive import info_nce_row_losses

        value = info_nce_row_losses(embeddings[0], torch.cat(embeddings[1:]), rows, self.logit_scale(), self.directions)
        value = value.mean()
        if with_backward:
            value.backward()
            value = value.detach()
        return value


def test_the_naive_cached_scale_gradient_ignores_the_outer_factor(model):
    """Why forward() re-attaches the scale gradient: without it the comparison above fails for the scale."""
    inputs = batches(model, 2)[:1]
    _, uncached = train_step(model, ObliqueContrastiveLoss(model, learnable_scale=True), inputs, factor=0.5)
    _, naive = train_step(model, NaiveCachedLoss(model, learnable_scale=True), inputs, factor=0.5)
    word_embeddings = "0.model.embeddings.word_embeddings.weight"
    torch.testing.assert_close(naive[word_embeddings], uncached[word_embeddings], rtol=1e-5, atol=1e-12)
    assert naive["loss.logit_scale"].item() == pytest.approx(2 * uncached["loss.logit_scale"].item(), rel=1e-5)


def test_evaluation_without_gradients_gives_the_same_loss(model):
    features = batches(model, 3)[0]
    cached = CachedObliqueContrastiveLoss(model, learnable_scale=True, mini_batch_size=3)
    uncached = ObliqueContrastiveLoss(model, learnable_scale=True)
    with torch.no_grad():
        assert cached(features, None).item() == pytest.approx(uncached(features, None).item(), rel=1e-6)


def test_options_and_config(model):
    with pytest.raises(ValueError, match="mini_batch_size"):
        CachedObliqueContrastiveLoss(model, mini_batch_size=0)
    with pytest.raises(ValueError, match="mini_batch_num_tokens"):
        CachedObliqueContrastiveLoss(model, mini_batch_num_tokens=0)
    loss = CachedObliqueContrastiveLoss(model, scale=3.0, mini_batch_size=16)
    assert loss.get_config_dict()["mini_batch_size"] == 16 and loss.get_config_dict()["scale"] == 3.0
    assert "gao2021scaling" in loss.citation
    with pytest.raises(ValueError, match="at least two input columns"):
        loss([model.preprocess(["a man"])], None)
