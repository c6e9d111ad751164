"""ObliqueContrastiveLoss against independent references (ST's MNRL, open_clip's ClipLoss, a float64 formula)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from losses.loss_cases import global_embeddings, pooling_holder
from open_clip.loss import ClipLoss
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import dot_score
from torch import nn

from st_oblique import ObliqueContrastiveLoss, manifold
from st_oblique.modules.logit_scale import PAPER_MAX_SCALE

SYMMETRIC = ("query_to_doc", "doc_to_query")


def loss_and_grads(loss_fn, columns: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [column.clone().requires_grad_() for column in columns]
    value = loss_fn(leaves)
    return value.detach(), list(torch.autograd.grad(value, leaves))


def assert_same(ours, reference, atol: float, rtol: float = 0.0) -> None:
    torch.testing.assert_close(ours[0], reference[0], atol=atol, rtol=rtol)
    for mine, theirs in zip(ours[1], reference[1], strict=True):
        torch.testing.assert_close(mine, theirs, atol=atol, rtol=rtol)


# float64 shows the formulas are identical (agreement to 1e-10); float32 shows the acceptance bound 1e-6 holds in
# the precision models train in (at large scales float32 rounding alone reaches 1e-6, whatever the implementation).
PRECISIONS = [(torch.float64, 1.0, 1e-10), (torch.float64, 20.0, 1e-10), (torch.float32, 1.0, 1e-6)]


@pytest.mark.parametrize(("dtype", "scale", "tolerance"), PRECISIONS)
@pytest.mark.parametrize("num_columns", [2, 3])
def test_k1_equals_symmetric_mnrl_with_dot_score(dtype, scale, tolerance, num_columns):
    columns = global_embeddings(num_columns, batch_size=16, num_tokens=1, token_dim=32, dtype=dtype)
    holder = pooling_holder(num_tokens=1, token_dim=32)
    ours = ObliqueContrastiveLoss(holder, scale=scale)
    mnrl = MultipleNegativesRankingLoss(
        holder, scale=scale, similarity_fct=dot_score, directions=SYMMETRIC, partition_mode="per_direction"
    )
    expected = loss_and_grads(lambda c: mnrl.compute_loss_from_embeddings(c, None), columns)
    assert_same(loss_and_grads(ours.compute_loss_from_embeddings, columns), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize(("dtype", "scale", "tolerance"), [*PRECISIONS, (torch.float64, 100.0, 1e-10)])
def test_k1_equals_open_clip_clip_loss(dtype, scale, tolerance):
    image, text = global_embeddings(2, batch_size=16, num_tokens=1, token_dim=32, dtype=dtype)
    ours = ObliqueContrastiveLoss(pooling_holder(num_tokens=1, token_dim=32), scale=scale)
    clip = ClipLoss()
    expected = loss_and_grads(lambda c: clip(c[0], c[1], scale), [image, text])
    assert_same(loss_and_grads(ours.compute_loss_from_embeddings, [image, text]), expected, atol=tolerance, rtol=tolerance)


def reference_loss(columns: list[torch.Tensor], log_scale: torch.Tensor, num_tokens: int, directions) -> torch.Tensor:
    """The loss from the paper's formula, in float64: s(u, v) = sum_k <u_k, v_k> on the token views.

    For unit tokens <u_k, v_k> = cos(u_k, v_k); the normalization belongs to the model (ObliquePooling), so the loss
    differentiates the inner products.
    """
    anchors, *candidate_columns = (manifold.to_tokens(column.double(), num_tokens) for column in columns)
    candidates = torch.cat(candidate_columns)
    scale = log_scale.double().exp()
    # (B, M*B, K): inner product of token k of anchor i and token k of candidate j
    per_token = (anchors[:, None, :, :] * candidates[None, :, :, :]).sum(-1)
    logits = scale * per_token.sum(-1)
    targets = torch.arange(anchors.shape[0])
    loss = F.cross_entropy(logits, targets)
    if "doc_to_query" in directions:
        loss = (loss + F.cross_entropy(logits[:, : anchors.shape[0]].T, targets)) / 2
    return loss


@pytest.mark.parametrize(
    ("num_columns", "directions", "learnable"),
    [(2, SYMMETRIC, False), (3, SYMMETRIC, True), (4, ("query_to_doc",), True)],
)
def test_k16_equals_a_float64_reference(num_columns, directions, learnable):
    columns = global_embeddings(num_columns, batch_size=12, num_tokens=16, token_dim=32)
    loss = ObliqueContrastiveLoss(
        pooling_holder(16, 32), scale=1.7, learnable_scale=learnable, directions=directions
    ).double()
    leaves = [column.clone().requires_grad_() for column in columns]
    # the learnable parameter was created in float32: take its exact value
    initial = loss.logit_scale.log_scale_bias.detach() if learnable else torch.tensor(math.log(1.7), dtype=torch.float64)
    log_scale = initial.clone().requires_grad_()
    expected = reference_loss(leaves, log_scale, 16, directions)
    expected_grads = torch.autograd.grad(expected, [*leaves, log_scale])
    value = loss.compute_loss_from_embeddings(leaves)
    inputs = [*leaves, loss.logit_scale.log_scale_bias] if learnable else leaves
    grads = torch.autograd.grad(value, inputs)
    torch.testing.assert_close(value, expected, atol=1e-12, rtol=1e-12)
    for mine, theirs in zip(grads, expected_grads[: len(inputs)], strict=True):  # no scale gradient when fixed
        torch.testing.assert_close(mine, theirs, atol=1e-12, rtol=1e-10)


def test_raw_sums_by_default_span_minus_k_to_k():
    loss = ObliqueContrastiveLoss(pooling_holder(16, 32))
    assert loss.scale == 1.0 and not loss.learnable_scale and list(loss.parameters(recurse=False)) == []
    anchors = global_embeddings(1, batch_size=3, num_tokens=16, token_dim=32)[0]
    # identical pairs: every logit of the positive is the maximal similarity K
    logits = anchors @ anchors.T
    assert torch.allclose(logits.diagonal(), torch.full((3,), 16.0, dtype=torch.float64))
    expected = (torch.logsumexp(logits, 1) - 16).mean()
    torch.testing.assert_close(loss.compute_loss_from_embeddings([anchors, anchors]), expected)


def test_learnable_scale_is_log_parameterized_and_capped_like_open_clip():
    loss = ObliqueContrastiveLoss(pooling_holder(), scale=2.0, learnable_scale=True, max_scale=PAPER_MAX_SCALE)
    assert torch.isclose(loss.logit_scale.log_scale_bias, torch.tensor(math.log(2.0)))
    assert loss.temperature_parameters() == {"logit_scale": loss.logit_scale.log_scale_bias}
    columns = global_embeddings(2, dtype=torch.float32)
    with torch.no_grad():
        loss.logit_scale.log_scale_bias.fill_(math.log(10.0))  # an optimizer step overshot the cap
    value = loss.compute_loss_from_embeddings(columns)
    assert loss.scale == pytest.approx(PAPER_MAX_SCALE, rel=1e-6)
    # The clamp acts on the parameter, not inside the graph: the gradient still flows at the cap.
    value.backward()
    assert loss.logit_scale.log_scale_bias.grad is not None and loss.logit_scale.log_scale_bias.grad != 0
    capped = ObliqueContrastiveLoss(pooling_holder(), scale=PAPER_MAX_SCALE, learnable_scale=True, max_scale=None)
    assert capped.max_scale is None
    with pytest.raises(ValueError, match="above max_scale"):
        ObliqueContrastiveLoss(pooling_holder(), scale=5.0, learnable_scale=True, max_scale=PAPER_MAX_SCALE)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf"), "big"])
def test_rejects_a_scale_that_is_not_positive(scale):
    with pytest.raises(ValueError, match="scale must be a positive"):
        ObliqueContrastiveLoss(pooling_holder(), scale=scale)


def test_rejects_unsupported_directions_and_models_without_oblique_pooling():
    with pytest.raises(ValueError, match="directions"):
        ObliqueContrastiveLoss(pooling_holder(), directions=("doc_to_query",))
    with pytest.raises(ValueError, match="directions"):
        ObliqueContrastiveLoss(pooling_holder(), directions=("query_to_doc", "query_to_query"))
    with pytest.raises(ValueError, match="no ObliquePooling"):
        ObliqueContrastiveLoss(nn.Sequential(nn.Linear(2, 2)))
    mixed = nn.Sequential(pooling_holder(4, 8), pooling_holder(2, 16))
    with pytest.raises(ValueError, match="disagree"):
        ObliqueContrastiveLoss(mixed)


def test_explains_bad_embeddings():
    loss = ObliqueContrastiveLoss(pooling_holder())  # K=4, d=8
    anchors, positives = global_embeddings(2, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"positive embeddings have shape \(6, 24\).*K\*d"):
        loss.compute_loss_from_embeddings([anchors, positives[:, :24]])
    with pytest.raises(ValueError, match="same number of rows"):
        loss.compute_loss_from_embeddings([anchors, positives[:5]])
    with pytest.raises(ValueError, match="at least two input columns"):
        loss.compute_loss_from_embeddings([anchors])
    with pytest.raises(ValueError, match="Normalize module"):
        loss.compute_loss_from_embeddings([anchors, positives / 2])  # what Normalize does for K=4: / sqrt(K)
    with pytest.raises(ValueError, match="normalized globally"):
        loss.compute_loss_from_embeddings([F.normalize(anchors + 0.3 * torch.randn_like(anchors)), positives])
    for bad in (float("nan"), float("inf")):
        broken = positives.clone()
        broken[2, 5] = bad
        with pytest.raises(ValueError, match="positive embedding contains NaN or inf"):
            loss.compute_loss_from_embeddings([anchors, broken])
    with pytest.raises(ValueError, match="negative_1 embedding is not on the oblique manifold"):
        loss.compute_loss_from_embeddings([anchors, positives, 3 * positives])


def test_a_single_pair_gives_zero_loss_and_a_warning(caplog):
    loss = ObliqueContrastiveLoss(pooling_holder())
    anchors, positives = global_embeddings(2, batch_size=1, dtype=torch.float32)
    with caplog.at_level(logging.WARNING):
        value = loss.compute_loss_from_embeddings([anchors, positives])
    assert value.item() == 0.0
    assert "single (anchor, positive) pair" in caplog.text
    # with a hard negative there is something to learn, and no warning
    caplog.clear()
    with_negative = loss.compute_loss_from_embeddings(global_embeddings(3, batch_size=1, dtype=torch.float32))
    assert with_negative.item() > 0 and "single" not in caplog.text


def test_half_precision_embeddings_are_accepted():
    loss = ObliqueContrastiveLoss(pooling_holder())
    columns = [column.to(torch.bfloat16) for column in global_embeddings(2, dtype=torch.float32)]
    assert torch.isfinite(loss.compute_loss_from_embeddings(columns))


def test_trains_a_real_model_from_features(tiny_bert_dir):
    from losses.loss_cases import oblique_model, text_batch

    model = oblique_model(tiny_bert_dir)
    loss = ObliqueContrastiveLoss(model, learnable_scale=True)
    features = [model.preprocess(column) for column in text_batch()]
    value = loss(features, None)
    value.backward()
    assert value.item() > 0
    assert model[1].heads["default"].projection.grad is not None
    assert loss.logit_scale.log_scale_bias.grad is not None


def test_config_and_citation_for_the_model_card(tiny_bert_dir):
    loss = ObliqueContrastiveLoss(pooling_holder(), scale=2.5, learnable_scale=True, max_scale=50.0)
    assert loss.get_config_dict() == {
        "scale": 2.5,
        "learnable_scale": True,
        "max_scale": 50.0,
        "gather_across_devices": False,
        "reduction": "sum",
        "directions": SYMMETRIC,
    }
    assert "arXiv:2209.02127" in loss.citation
    assert loss.temperature == pytest.approx(0.4)
    model = SentenceTransformer(tiny_bert_dir)  # a plain ST model cannot be trained with it
    with pytest.raises(ValueError, match="MultipleNegativesRankingLoss"):
        ObliqueContrastiveLoss(model)


def test_mean_reduction_is_sparo_mean_of_cosines_and_matches_mnrl_with_cosine():
    """reduction="mean": logits = scale * (1/K) sum_k cos (a float64 reference), which for unit tokens is the cosine of
    the flat vectors, i.e. ST's MultipleNegativesRankingLoss with cos_sim at the same scale."""
    from sentence_transformers.util import cos_sim

    columns = global_embeddings(3, batch_size=12, num_tokens=16, token_dim=32)
    loss = ObliqueContrastiveLoss(pooling_holder(16, 32), scale=1 / 0.07, reduction="mean").double()
    leaves = [column.clone().requires_grad_() for column in columns]
    expected = reference_loss(leaves, torch.tensor(math.log(1 / 0.07 / 16), dtype=torch.float64), 16, SYMMETRIC)
    torch.testing.assert_close(loss.compute_loss_from_embeddings(leaves), expected, atol=1e-12, rtol=1e-12)
    mnrl = MultipleNegativesRankingLoss(
        pooling_holder(16, 32), scale=1 / 0.07, similarity_fct=cos_sim, directions=SYMMETRIC,
        partition_mode="per_direction",
    )
    # the same value; gradients differ by design (cos_sim also differentiates through the normalization)
    torch.testing.assert_close(
        loss.compute_loss_from_embeddings(columns), mnrl.compute_loss_from_embeddings(columns, None), atol=1e-10, rtol=1e-10
    )
    assert loss.get_config_dict()["reduction"] == "mean"
    with pytest.raises(ValueError, match="reduction must be one of"):
        ObliqueContrastiveLoss(pooling_holder(16, 32), reduction="max")
