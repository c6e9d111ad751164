"""ObliqueMatryoshkaLoss: the wrapped loss at whole-token prefixes (float64 references), no renormalization, the
logit range across prefixes, GradCache, and the refusal of Sentence Transformers' MatryoshkaLoss."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from losses.loss_cases import NUM_TOKENS, TOKEN_DIM, global_embeddings, oblique_model, pooling_holder, text_batch
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

from st_oblique import (
    CachedObliqueContrastiveLoss,
    ObliqueContrastiveLoss,
    ObliqueMatryoshkaLoss,
    ObliqueSigmoidLoss,
    ObliqueTrainer,
    manifold,
)
from st_oblique.losses.matryoshka import default_token_counts, parse_token_counts

K, D = NUM_TOKENS, TOKEN_DIM  # 4 tokens of 8


def info_nce_reference(anchors, positives, scale: float) -> torch.Tensor:
    """Symmetric InfoNCE in float64 from the token view: logits ``scale * sum_t <a_t, p_t>``."""
    a = manifold.to_tokens(anchors.double(), anchors.shape[1] // D)
    p = manifold.to_tokens(positives.double(), positives.shape[1] // D)
    logits = scale * torch.einsum("itd,jtd->ij", a, p)
    target = torch.arange(len(a))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def sigmoid_reference(anchors, positives, scale: float, bias: float) -> torch.Tensor:
    logits = scale * (anchors.double() @ positives.double().T) + bias
    signs = 2 * torch.eye(len(anchors), dtype=torch.float64) - 1
    return -F.logsigmoid(signs * logits).sum() / len(anchors)


@pytest.mark.parametrize("logit_range", ["matched", "raw"])
def test_sum_of_wrapped_loss_at_each_prefix(logit_range):
    anchors, positives = global_embeddings()
    counts, weights, scale = [1, 2, 4], [0.5, 1.0, 2.0], 2.0
    holder = pooling_holder()
    nested = ObliqueMatryoshkaLoss(holder, ObliqueContrastiveLoss(holder, scale=scale), counts, weights, logit_range)
    value = nested.compute_loss_from_embeddings([anchors, positives])
    expected = sum(
        weight
        * info_nce_reference(
            anchors[:, : k * D], positives[:, : k * D], scale * (K / k if logit_range == "matched" else 1)
        )
        for k, weight in zip(counts, weights, strict=True)
    )
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)


def test_full_prefix_only_is_the_wrapped_loss():
    holder = pooling_holder()
    anchors, positives, negatives = global_embeddings(num_columns=3)
    for wrapped in (ObliqueContrastiveLoss(holder, scale=3.0), ObliqueSigmoidLoss(holder, scale=1.5)):
        nested = ObliqueMatryoshkaLoss(holder, wrapped, token_counts=[K])
        columns = [anchors, positives, negatives]
        assert nested.compute_loss_from_embeddings(columns) == wrapped.compute_loss_from_embeddings(columns)


def test_no_global_renormalization():
    """Sentence Transformers' shrink (a global renormalization of the prefix) gives other logits: caught here."""
    holder = pooling_holder()
    anchors, positives = global_embeddings()
    nested = ObliqueMatryoshkaLoss(
        holder, ObliqueContrastiveLoss(holder, scale=1.0), token_counts=[2], logit_range="raw"
    )
    value = nested.compute_loss_from_embeddings([anchors, positives])
    cut = anchors[:, : 2 * D], positives[:, : 2 * D]
    torch.testing.assert_close(value, info_nce_reference(*cut, 1.0), rtol=1e-12, atol=1e-12)
    renormalized = info_nce_reference(F.normalize(cut[0], dim=-1), F.normalize(cut[1], dim=-1), 1.0)
    assert abs(value.item() - renormalized.item()) > 1e-3
    # and the wrapped loss sees unit tokens: the prefix it is given is on the manifold
    seen = []
    original = nested.loss.compute_loss_from_embeddings

    def spy(embeddings, labels=None):
        seen.extend(embeddings)
        return original(embeddings, labels)

    nested.loss.compute_loss_from_embeddings = spy
    nested.compute_loss_from_embeddings([anchors, positives])
    assert all(manifold.is_on_manifold(column, 2, atol=1e-6) for column in seen)


def test_logit_range_matched_across_prefixes():
    """Collapsed embeddings (every token a copy of the first): with the matched range every prefix scores the
    same logits, so every prefix gives the full loss (also SigLIP with its bias -K); with the raw sum it does not."""
    holder = pooling_holder()
    generator = torch.Generator().manual_seed(3)
    first = F.normalize(torch.randn(6, 1, D, generator=generator, dtype=torch.float64), dim=-1)
    noisy = F.normalize(first + 0.7 * torch.randn(6, 1, D, generator=generator, dtype=torch.float64), dim=-1)
    anchors, positives = (manifold.to_flat(x.expand(-1, K, -1)) for x in (first, noisy))
    for wrapped in (ObliqueContrastiveLoss(holder, scale=1.0), ObliqueSigmoidLoss(holder, scale=1.0)):
        full = wrapped.compute_loss_from_embeddings([anchors, positives])
        for k in (1, 2, K):
            matched = ObliqueMatryoshkaLoss(holder, wrapped, token_counts=[k])
            torch.testing.assert_close(matched.compute_loss_from_embeddings([anchors, positives]), full)
        raw = ObliqueMatryoshkaLoss(holder, wrapped, token_counts=[1], logit_range="raw")
        assert abs(raw.compute_loss_from_embeddings([anchors, positives]).item() - full.item()) > 1e-2
    # reduction="mean" already scores the mean of the prefix: no factor
    mean = ObliqueContrastiveLoss(holder, scale=10.0, reduction="mean")
    nested = ObliqueMatryoshkaLoss(holder, mean, token_counts=[1])
    assert nested.logit_factor(1) == 1.0
    torch.testing.assert_close(
        nested.compute_loss_from_embeddings([anchors, positives]),
        mean.compute_loss_from_embeddings([anchors, positives]),
    )


def test_sigmoid_prefix_reference():
    holder = pooling_holder()
    anchors, positives = global_embeddings()
    wrapped = ObliqueSigmoidLoss(holder, scale=1.5, learnable_scale=False, learnable_bias=False)
    nested = ObliqueMatryoshkaLoss(holder, wrapped, token_counts=[1, 4])
    expected = sum(sigmoid_reference(anchors[:, : k * D], positives[:, : k * D], 1.5 * K / k, -1.5 * K) for k in (1, 4))
    torch.testing.assert_close(nested.compute_loss_from_embeddings([anchors, positives]), expected)
    assert wrapped.num_tokens == K and wrapped.prefix_logit_factor == 1.0  # restored after each prefix


@pytest.mark.parametrize("bad", [[1.5], [0], [K + 1], [True], [2, 2], []])
def test_cut_inside_a_token_or_bad_counts_refused(bad):
    holder = pooling_holder()
    with pytest.raises(ValueError, match="token"):
        ObliqueMatryoshkaLoss(holder, ObliqueContrastiveLoss(holder), token_counts=bad)


def test_options_checked_and_defaults():
    holder = pooling_holder()
    wrapped = ObliqueContrastiveLoss(holder)
    assert ObliqueMatryoshkaLoss(holder, wrapped).token_counts == [1, 2, 4]
    assert default_token_counts(16) == [1, 2, 4, 8, 16] and default_token_counts(12) == [1, 2, 4, 8, 12]
    assert parse_token_counts("1,2,4", 4) == [1, 2, 4] and parse_token_counts("default", 16)[-1] == 16
    with pytest.raises(ValueError, match="separated by commas"):
        parse_token_counts("1;2")
    with pytest.raises(ValueError, match="weights"):
        ObliqueMatryoshkaLoss(holder, wrapped, token_counts=[1, 4], weights=[1.0])
    with pytest.raises(ValueError, match="logit_range"):
        ObliqueMatryoshkaLoss(holder, wrapped, logit_range="per_token")
    with pytest.raises(ValueError, match="st-oblique loss"):
        ObliqueMatryoshkaLoss(holder, torch.nn.MSELoss())
    nested = ObliqueMatryoshkaLoss(holder, wrapped, token_counts=[4, 1], weights=[2.0, 1.0])
    assert nested.get_config_dict() == {
        "loss": "ObliqueContrastiveLoss",
        "token_counts": [1, 4],
        "weights": [1.0, 2.0],
        "logit_range": "matched",
    }


def test_warns_without_full_prefix(caplog):
    holder = pooling_holder()
    with caplog.at_level(logging.WARNING):
        ObliqueMatryoshkaLoss(holder, ObliqueContrastiveLoss(holder), token_counts=[1, 2])
    assert "leaves out the model's K=4" in caplog.text


@pytest.fixture(scope="module")
def model(tiny_bert_dir):
    return oblique_model(tiny_bert_dir).eval().double()


def gradients(model, loss, features) -> tuple[float, dict[str, torch.Tensor]]:
    loss.double().zero_grad()
    model.zero_grad()
    value = loss(features, None)
    (0.5 * value).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    for name, parameter in loss.loss.temperature_parameters().items():
        grads[f"loss.{name}"] = parameter.grad.clone()
    return value.item(), grads


@pytest.mark.parametrize("learnable", [True, False])
def test_cached_equals_uncached_and_one_forward(model, learnable, monkeypatch):
    features = [model.preprocess(column) for column in text_batch()]
    options = {"scale": 2.0, "learnable_scale": learnable}
    uncached = ObliqueMatryoshkaLoss(model, ObliqueContrastiveLoss(model, **options), weights=[1.0, 0.5, 2.0])
    cached = ObliqueMatryoshkaLoss(
        model, CachedObliqueContrastiveLoss(model, mini_batch_size=3, **options), weights=[1.0, 0.5, 2.0]
    )
    assert cached.uses_gradient_cache and not uncached.uses_gradient_cache
    calls = []
    original_forward = type(model).forward

    def counting_forward(self, features, *args, **kwargs):
        calls.append(len(features["input_ids"]))
        return original_forward(self, features, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", counting_forward)  # test-only spy on the model's class
    value_u, grads_u = gradients(model, uncached, features)
    assert sum(calls) == 3 * 8  # every row embedded once, for all the prefixes (ST may merge the columns)
    calls.clear()
    value_c, grads_c = gradients(model, cached, features)
    assert sum(calls) == 2 * 3 * 8  # GradCache: every column embedded twice, once per pass, whatever the prefixes
    assert value_c == pytest.approx(value_u, rel=1e-10)
    assert grads_c.keys() == grads_u.keys()
    for name in grads_u:
        torch.testing.assert_close(
            grads_c[name], grads_u[name], rtol=1e-6, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_trains_with_the_trainer_and_refuses_sentence_transformers_matryoshka(tiny_bert_dir, tmp_path):
    model = oblique_model(tiny_bert_dir)
    anchors, positives, _ = text_batch()
    train = Dataset.from_dict({"anchor": anchors, "positive": positives})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=1,
        per_device_train_batch_size=4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    loss = ObliqueMatryoshkaLoss(model, ObliqueContrastiveLoss(model, learnable_scale=True))
    before = model.encode(anchors, truncate_dim=D)
    trainer = ObliqueTrainer(model=model, args=args, train_dataset=train, loss=loss)
    trainer.train()
    assert not torch.allclose(torch.as_tensor(model.encode(anchors, truncate_dim=D)), torch.as_tensor(before))

    st_loss = MatryoshkaLoss(model, ObliqueContrastiveLoss(model), [4 * D, 2 * D, D])
    for trainer_class in (SentenceTransformerTrainer, ObliqueTrainer):
        with pytest.raises(ValueError, match="ObliqueMatryoshkaLoss") as error:
            trainer_class(model=model, args=args, train_dataset=train, loss=st_loss)
        assert "renormalizes" in str(error.value)
    inside = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), [4 * D, 12])
    with pytest.raises(ValueError, match=r"cut inside a token.*token_counts=\[4, 1\]"):
        SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=inside)
