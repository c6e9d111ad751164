"""The image part of the nested-tokens study (evaluation/studies/nested_tokens.py): its "ST MatryoshkaLoss" arm is
Sentence Transformers' MatryoshkaLoss, and the study runs end to end on the config's smoke subsets of the real data."""

from __future__ import annotations

import json

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
from torch import nn

from evaluation.studies import nested_tokens as study
from evaluation.studies.lit_heads import build_head


class GivenEmbeddings(nn.Module):
    """A Sentence Transformers module whose input is the embedding: ``{"embedding": (B, D)}``."""

    def __init__(self, dimension: int) -> None:
        super().__init__()
        self.dimension = dimension

    def forward(self, features: dict) -> dict:
        return {**features, "sentence_embedding": features["embedding"]}

    def get_embedding_dimension(self) -> int:
        return self.dimension


def test_sphere_matryoshka_arm_is_sentence_transformers_matryoshka_loss():
    """The arm's objective (the study's own code, which keeps the head's learnable temperature) equals ST's
    ``MatryoshkaLoss(model, MultipleNegativesRankingLoss(both directions, per direction), [512, ..., 32])`` at the
    same scale: the loss and its gradients with respect to both columns."""
    torch.manual_seed(0)
    head = build_head(study.SPHERE, {"image": 8, "text": 8})
    objective, scale_holder = study.make_objective(study.SPHERE, "st_matryoshka", head)
    width = study.SPHERE.num_tokens * study.SPHERE.token_dim
    images, texts = torch.randn(6, width, dtype=torch.float64), torch.randn(6, width, dtype=torch.float64)

    ours_inputs = [images.clone().requires_grad_(), texts.clone().requires_grad_()]
    ours = objective(*ours_inputs)
    ours.backward()

    model = SentenceTransformer(modules=[GivenEmbeddings(width)], device="cpu")
    inner = MultipleNegativesRankingLoss(
        model, scale=float(scale_holder.similarity_scale().detach()), directions=("query_to_doc", "doc_to_query"),
        partition_mode="per_direction",
    )
    reference_loss = MatryoshkaLoss(model, inner, [k * study.TOKEN_DIM for k in reversed(study.TOKEN_COUNTS)])
    theirs_inputs = [images.clone().requires_grad_(), texts.clone().requires_grad_()]
    theirs = reference_loss([{"embedding": theirs_inputs[0]}, {"embedding": theirs_inputs[1]}], None)
    theirs.backward()

    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-10, atol=1e-10)
    for mine, reference in zip(ours_inputs, theirs_inputs, strict=True):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-9, atol=1e-12)
    assert float(ours) > 0


@pytest.mark.slow
def test_smoke_run_trains_every_arm_and_writes_the_report(shared, tmp_path):
    output = tmp_path / "nested"
    argv = ["--smoke", "--output-dir", str(output), "--shared-dir", str(shared), "--cache-dir", str(tmp_path / "cache")]
    assert study.main(argv) == 0
    folder = output / "smoke"
    records = [json.loads(path.read_text()) for path in (folder / "runs").glob("*.json")]
    assert sorted(record["spec"]["arm"] for record in records) == sorted(study.ARMS)
    for record in records:
        assert set(record["metrics_at_k"]) == {str(k) for k in study.TOKEN_COUNTS}
        assert all(0.0 <= metrics["mean_recall"] <= 1.0 for metrics in record["metrics_at_k"].values())
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["arms"]) == set(study.ARMS)
    assert set(summary["paired"]) == {"oblique_nested - oblique_plain", "oblique_nested - oblique_nested_raw",
                                      "oblique_nested - sphere_matryoshka"}
    report = (folder / "results.md").read_text()
    assert all(f"`{arm}`" in report for arm in study.ARMS)
    assert (folder / "quality_vs_k.png").stat().st_size > 1000
