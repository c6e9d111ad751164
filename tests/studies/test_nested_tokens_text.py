"""The text part of the nested-tokens study: which loss each arm trains, and its paired summary."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Dense

import st_oblique
from evaluation.studies import nested_tokens_text as study


def test_each_arm_trains_the_loss_it_names(tiny_bert_dir):
    assert study.wrap_loss("plain") is None
    oblique = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=16, token_dim=study.TOKEN_DIM)
    inner = st_oblique.ObliqueContrastiveLoss(oblique, scale=1.25)
    nested = study.wrap_loss("oblique_matryoshka")(oblique, inner)
    assert isinstance(nested, st_oblique.ObliqueMatryoshkaLoss) and nested.loss is inner
    assert nested.token_counts == list(study.TOKEN_COUNTS)

    tiny = SentenceTransformer(tiny_bert_dir)  # width 32: a Dense layer gives MiniLM's 384
    sphere = SentenceTransformer(modules=[*tiny, Dense(tiny.get_embedding_dimension(), 16 * study.TOKEN_DIM)])
    matryoshka = study.wrap_loss("st_matryoshka")(sphere, MultipleNegativesRankingLoss(sphere))
    assert isinstance(matryoshka, MatryoshkaLoss)
    assert sorted(matryoshka.matryoshka_dims) == [k * study.TOKEN_DIM for k in study.TOKEN_COUNTS]
    with pytest.raises(ValueError, match="unknown training"):
        study.wrap_loss("sum")


def record(arm: str, seed: int, scores: dict[int, float]) -> dict:
    return {
        "spec": {"arm": arm, "seed": seed},
        "metrics_at_k": {str(k): {"LocalSTSBenchmark": scores[k], "LocalSciFact": scores[k] / 2} for k in scores},
    }


def test_summary_pairs_the_arms_by_seed():
    rng = np.random.default_rng(0)
    values = {(arm, seed): rng.random(5) for arm in study.ARMS for seed in (0, 1, 2)}
    records = [
        record(arm, seed, dict(zip(study.TOKEN_COUNTS, values[arm, seed], strict=True)))
        for (arm, seed) in reversed(list(values))  # order must not matter: pairs are matched by seed
    ]
    summary = study.summarize(records)
    assert summary["tasks"] == ["LocalSTSBenchmark", "LocalSciFact"]
    for position, k in enumerate(study.TOKEN_COUNTS):
        plain = [values["oblique_plain", seed][position] for seed in (0, 1, 2)]
        assert summary["arms"]["oblique_plain"][str(k)]["LocalSTSBenchmark"]["mean"] == pytest.approx(np.mean(plain))
        assert summary["arms"]["oblique_plain"][str(k)]["LocalSTSBenchmark"]["sd"] == pytest.approx(
            np.std(plain, ddof=1)
        )
        diffs = [values["oblique_nested", s][position] - values["sphere_matryoshka", s][position] for s in (0, 1, 2)]
        row = summary["paired"]["oblique_nested - sphere_matryoshka"][str(k)]["LocalSciFact"]
        assert row["mean"] == pytest.approx(np.mean(diffs) / 2) and row["n"] == 3
        half = 4.303 * np.std(np.array(diffs) / 2, ddof=1) / np.sqrt(3)
        assert row["interval95"] == pytest.approx([np.mean(diffs) / 2 - half, np.mean(diffs) / 2 + half])


def test_evaluation_at_k_cuts_whole_tokens_and_restores_the_model(tiny_bert_dir, monkeypatch):
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=16, token_dim=study.TOKEN_DIM)
    seen = []

    def fake_evaluate(model, name, tasks):
        seen.append(model.truncate_dim)
        assert model.encode(["a"]).shape == (1, model.truncate_dim)
        return {"LocalSTSBenchmark": {"main_score": model.truncate_dim / 1000}}

    monkeypatch.setattr(study, "evaluate_text_model", fake_evaluate)
    results = study.evaluate_at_k(model, "m", tasks=[])
    assert seen == [k * study.TOKEN_DIM for k in study.TOKEN_COUNTS] and model.truncate_dim is None
    assert results["16"]["LocalSTSBenchmark"] == pytest.approx(0.384)
