"""The multi-vector study: each arm's scoring against a float64 reference (MaxSim, MUVERA's encoding, the oblique dot
product), MUVERA approximating Chamfer/MaxSim, the metrics, the splits' leakage checks and the smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evaluation.studies.fixed_dimensional_encoding import FDEConfig, FixedDimensionalEncoder
from evaluation.studies.multivector_arms import View, exact_scores, exact_top_k, pair_scores, retrieval_metrics
from evaluation.studies.multivector_data import (
    RetrievalTask,
    drop_leaked_pairs,
    leaked_texts,
    normalize_text,
)


def _sentence_transformers_version() -> tuple[int, ...]:
    import sentence_transformers

    return tuple(int(part) for part in sentence_transformers.__version__.split(".")[:2] if part.isdigit())


requires_st63 = pytest.mark.skipif(
    _sentence_transformers_version() < (6, 3),
    reason="needs sentence-transformers >= 6.3 (HierarchicalTokenPooling, MultiVectorTokenPoolingLoss, util.maxsim)",
)


def unit_sets(rng: np.random.Generator, lengths, dim: int) -> list[np.ndarray]:
    sets = [rng.standard_normal((n, dim)) for n in lengths]
    return [s / np.linalg.norm(s, axis=1, keepdims=True) for s in sets]


def chamfer64(query: np.ndarray, document: np.ndarray) -> float:
    """MaxSim / Chamfer similarity by its definition: sum over query vectors of the best document vector."""
    query, document = query.astype(np.float64), document.astype(np.float64)
    return float(sum(max(float(q @ p) for p in document) for q in query))


# ---------------------------------------------------------------------------------------------------------------
# Scoring of each arm vs float64
# ---------------------------------------------------------------------------------------------------------------


@requires_st63
def test_maxsim_views_match_float64_chamfer():
    rng = np.random.default_rng(0)
    queries = unit_sets(rng, (3, 5, 1), 8)
    documents = unit_sets(rng, (4, 1, 7, 2), 8)
    view = View("multi", [torch.tensor(q, dtype=torch.float32) for q in queries],
                [torch.tensor(d, dtype=torch.float32) for d in documents])
    expected = np.array([[chamfer64(q, d) for d in documents] for q in queries])
    np.testing.assert_allclose(exact_scores(view).numpy(), expected, atol=1e-5)
    scores, indices = exact_top_k(view, 2)
    np.testing.assert_array_equal(indices, np.argsort(-expected, axis=1)[:, :2])
    np.testing.assert_allclose(scores, np.sort(expected, axis=1)[:, ::-1][:, :2], atol=1e-5)
    pairs = View("multi", view.queries, view.documents[:3])
    np.testing.assert_allclose(pair_scores(pairs), [chamfer64(q, d) for q, d in zip(queries, documents[:3], strict=True)],
                               atol=1e-5)


def test_oblique_dot_view_is_the_sum_of_token_cosines_of_an_oblique_model(tiny_bert_dir):
    """The study's dense view of a real (tiny) oblique model scores the sum of the K per-token cosines."""
    from evaluation.studies.multivector_arms import StudyArm, build_arm, encode_texts

    arm = StudyArm("oblique4", "oblique", num_tokens=4, token_dim=8, scale=1.0)
    torch.manual_seed(0)
    model, _ = build_arm(arm, tiny_bert_dir, max_seq_length=16)
    queries, documents = ["a man plays the guitar", "two dogs run"], ["a dog runs", "a cat sits", "the red car"]
    view = encode_texts(arm, model, queries, documents, batch_size=4)["oblique4"]
    assert view.documents.shape == (3, 32) and view.bytes_per_document() == 128
    q = view.queries.astype(np.float64).reshape(2, 4, 8)
    d = view.documents.astype(np.float64).reshape(3, 4, 8)
    cos = np.einsum("qkd,nkd->qn", q / np.linalg.norm(q, axis=-1, keepdims=True),
                    d / np.linalg.norm(d, axis=-1, keepdims=True))
    np.testing.assert_allclose(exact_scores(view).numpy(), cos, atol=1e-5)
    np.testing.assert_allclose(exact_top_k(view, 3)[0], np.sort(cos, axis=1)[:, ::-1], atol=1e-5)
    np.testing.assert_allclose(model.similarity(view.queries, view.documents).numpy(), cos, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# MUVERA
# ---------------------------------------------------------------------------------------------------------------


def fde64(encoder: FixedDimensionalEncoder, vectors: np.ndarray, is_query: bool) -> np.ndarray:
    """The paper's definition, one partition and one point at a time, in float64 (no vectorization)."""
    config = encoder.config
    k = config.num_simhash_projections
    blocks = []
    for repetition in range(config.num_repetitions):
        bits = [[float(x @ g) > 0 for g in encoder.simhash[repetition].T] for x in vectors.astype(np.float64)]
        partition = [sum(int(b) << (k - 1 - j) for j, b in enumerate(row)) for row in bits]
        for b in range(config.num_partitions):
            members = [i for i in range(len(vectors)) if partition[i] == b]
            if members:
                block = np.sum([vectors[i] for i in members], axis=0, dtype=np.float64)
                if not is_query:
                    block = block / len(members)
            elif is_query or not config.fill_empty_partitions or k == 0:
                block = np.zeros(config.dimension)
            else:
                target = [(b >> (k - 1 - j)) & 1 for j in range(k)]
                hamming = [sum(int(bit) != t for bit, t in zip(row, target, strict=True)) for row in bits]
                block = vectors[hamming.index(min(hamming))].astype(np.float64)
            projection = encoder.projections[repetition]
            blocks.append(block if projection is None else block @ projection)
    encoding = np.concatenate(blocks)
    return encoding if encoder.final is None else encoding @ encoder.final


@pytest.mark.parametrize(
    "config",
    [
        FDEConfig(dimension=6, num_repetitions=3, num_simhash_projections=3),
        FDEConfig(dimension=6, num_repetitions=2, num_simhash_projections=2, projection_dimension=4),
        FDEConfig(dimension=6, num_repetitions=4, num_simhash_projections=3, projection_dimension=3, final_dimension=20),
        FDEConfig(dimension=6, num_repetitions=2, num_simhash_projections=3, fill_empty_partitions=False),
        FDEConfig(dimension=6, num_repetitions=1, num_simhash_projections=0),
    ],
    ids=lambda c: c.describe(),
)
def test_fde_matches_the_papers_definition_in_float64(config):
    rng = np.random.default_rng(1)
    encoder = FixedDimensionalEncoder(config)
    sets = [v.astype(np.float32) for v in unit_sets(rng, (1, 2, 3, 9), config.dimension)]
    queries, documents = encoder.encode_queries(sets), encoder.encode_documents(sets)
    assert queries.shape == documents.shape == (4, config.output_dimension) and queries.dtype == np.float32
    np.testing.assert_allclose(queries, np.stack([fde64(encoder, s, True) for s in sets]), atol=1e-5)
    np.testing.assert_allclose(documents, np.stack([fde64(encoder, s, False) for s in sets]), atol=1e-5)
    # Documents with 1-3 vectors and 8 partitions have empty partitions: the filling was exercised.
    if config.num_simhash_projections == 3 and config.fill_empty_partitions and config.projection_dimension is None:
        single = documents[0].reshape(config.num_repetitions, config.num_partitions, config.dimension)
        np.testing.assert_allclose(single, np.broadcast_to(sets[0][0], single.shape), atol=1e-6)


def test_fde_with_one_partition_is_the_sum_against_the_mean():
    """k_sim=0, identity: <F(Q), F(P)> = sum_q <q, mean(P)> exactly."""
    rng = np.random.default_rng(2)
    encoder = FixedDimensionalEncoder(FDEConfig(dimension=5, num_repetitions=1, num_simhash_projections=0))
    queries, documents = unit_sets(rng, (3,), 5), unit_sets(rng, (4,), 5)
    score = encoder.encode_queries(queries)[0] @ encoder.encode_documents(documents)[0]
    assert score == pytest.approx(float(queries[0].sum(0) @ documents[0].mean(0)), abs=1e-5)


@requires_st63
def test_fde_inner_product_approximates_chamfer_maxsim():
    """On clustered unit vectors (like token embeddings), FDE scores track ST's MaxSim, better with repetitions."""
    from sentence_transformers.util import maxsim

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((12, 16))
    sets = []
    for _ in range(40):
        picked = centres[rng.choice(12, size=4, replace=False)]
        vectors = np.repeat(picked, 3, axis=0) + 0.3 * rng.standard_normal((12, 16))
        sets.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    queries, documents = sets[:20], sets[20:]
    chamfer = maxsim([torch.tensor(q, dtype=torch.float32) for q in queries],
                     [torch.tensor(d, dtype=torch.float32) for d in documents]).numpy()
    np.testing.assert_allclose(chamfer[0, 0], chamfer64(queries[0], documents[0]), atol=1e-4)
    correlations = {}
    for repetitions in (1, 20):
        encoder = FixedDimensionalEncoder(FDEConfig(16, repetitions, 3, seed=4))
        approximation = encoder.encode_queries(queries) @ encoder.encode_documents(documents).T / repetitions
        correlations[repetitions] = np.corrcoef(approximation.ravel(), chamfer.ravel())[0, 1]
        top = np.argsort(-approximation, axis=1)[:, :3]
        assert np.mean([chamfer.argmax(1)[i] in top[i] for i in range(20)]) >= (0.5 if repetitions == 1 else 0.8)
    assert correlations[20] > 0.9 and correlations[20] > correlations[1]


def test_fde_refuses_bad_inputs_with_the_fix():
    with pytest.raises(ValueError, match="num_simhash_projections"):
        FDEConfig(dimension=4, num_simhash_projections=20)
    encoder = FixedDimensionalEncoder(FDEConfig(dimension=4))
    with pytest.raises(ValueError, match=r"Vector set 1 has shape \(2, 3\).*FDEConfig.dimension"):
        encoder.encode_documents([np.ones((2, 4)), np.ones((2, 3))])
    from evaluation.studies.multivector import fde_designs

    with pytest.raises(ValueError, match="gives 1024 floats"):
        fde_designs({"output_dimension": 512, "designs": {"big": {"num_repetitions": 4, "num_simhash_projections": 3}}},
                    token_dim=32)


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def test_retrieval_metrics_drop_the_query_itself_and_follow_the_definitions():
    captions = {"a#0": "x", "a#1": "y", "b#0": "z", "b#1": "w"}
    task = RetrievalTask("t", dict(captions), dict(captions),
                         {"a#0": {"a#1"}, "a#1": {"a#0"}, "b#0": {"b#1"}, "b#1": {"b#0"}}, exclude_self=True)
    # Rows follow the queries; every query finds itself first. a#0 then finds b#0, a#1; b#1 finds b#0 second.
    indices = np.array([[0, 2, 1, 3], [1, 0, 2, 3], [2, 3, 0, 1], [3, 0, 2, 1]])
    scores = np.tile(np.array([4.0, 3.0, 2.0, 1.0]), (4, 1))
    metrics = retrieval_metrics(task, scores, indices)
    assert metrics["recall@1"] == pytest.approx((0 + 1 + 1 + 0) / 4)
    assert metrics["recall@10"] == 1.0
    expected_ndcg = np.mean([1 / np.log2(3), 1.0, 1.0, 1 / np.log2(3)])
    assert metrics["ndcg@10"] == pytest.approx(expected_ndcg)
    assert metrics["mrr@10"] == pytest.approx(np.mean([1 / 2, 1, 1, 1 / 2]))


# ---------------------------------------------------------------------------------------------------------------
# Leakage
# ---------------------------------------------------------------------------------------------------------------


def test_leakage_filter_drops_pairs_sharing_a_normalized_sentence():
    evaluation = ["A man is playing a guitar.", "Stocks fell 3% on Monday"]
    pairs = [("a MAN is playing a guitar", "someone plays music"), ("dogs run", "two dogs are running"),
             ("x", "Stocks fell 3 % on Monday!")]
    kept, dropped = drop_leaked_pairs(pairs, evaluation)
    assert kept == [("dogs run", "two dogs are running")] and dropped == 2
    assert leaked_texts(kept, evaluation) == set()
    assert leaked_texts(pairs, evaluation) == {normalize_text("a man is playing a guitar"),
                                               normalize_text("stocks fell 3 % on monday")}


@pytest.mark.shared
def test_study_splits_have_no_query_document_leakage(shared):
    from evaluation.studies.multivector import DEFAULT_CONFIG
    from evaluation.studies.multivector_data import build_study_data, read_flickr_1k_images
    from evaluation.studies.topology import load_config

    config = load_config(DEFAULT_CONFIG)["data"]
    data = build_study_data(config, shared)
    assert len(data.pairs) > 1000 and data.notes["pairs_dropped_for_leakage"] >= 1  # STSb holds MSRP sentences
    assert leaked_texts(data.pairs, data.evaluation_texts()) == set()
    test_images = {cid.split("#")[0] for cid in data.test["flickr"].queries}
    validation_images = {cid.split("#")[0] for cid in data.validation["flickr"].queries}
    flickr_1k = read_flickr_1k_images(shared / "data" / "flickr8k_1k" / "captions.tsv")
    assert test_images == set(flickr_1k[: config["flickr_test_images"]])
    assert not validation_images & set(flickr_1k)  # validation images come from outside Flickr8k-1k
    assert not test_images & validation_images
    assert not set(data.validation["scifact"].queries) & set(data.test["scifact"].queries)
    assert len(data.test["scifact"].queries) == 300 and len(data.test["stsb"].scores) == 1379
    # Every test claim's relevant abstracts are in its corpus; caption tasks never list a query as its own answer.
    for task in (data.test["scifact"], data.validation["scifact"]):
        assert all(docs <= set(task.corpus) for docs in task.relevant.values())
    assert all(query not in relevant for query, relevant in data.test["flickr"].relevant.items())


# ---------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------


def test_older_sentence_transformers_is_refused_with_the_fix(monkeypatch):
    import sentence_transformers

    from evaluation.studies.multivector import require_sentence_transformers

    monkeypatch.setattr(sentence_transformers, "__version__", "6.2.1")
    with pytest.raises(SystemExit, match=r"needs sentence-transformers >= 6.3.*pip install"):
        require_sentence_transformers()


@requires_st63
@pytest.mark.shared
@pytest.mark.slow
def test_smoke_run_trains_every_arm_and_writes_tables_timings_and_plots(shared, tiny_bert_dir, tmp_path):
    from evaluation.studies.multivector import DEFAULT_CONFIG, main
    from evaluation.studies.topology import load_config

    output = tmp_path / "study"
    argv = ["--smoke", "--output-dir", str(output), "--shared-dir", str(shared), "--model", tiny_bert_dir,
            "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    config = load_config(DEFAULT_CONFIG, smoke=True)
    records = [json.loads(path.read_text()) for path in (output / "runs").glob("*.json")]
    grid, seeds = config["lr_selection"]["grid"], config["seeds"]
    # Selection (validation only) at every learning rate, then every seed at the chosen one (test only).
    assert len(records) == len(config["arms"]) * (len(grid) + len(seeds))
    assert all(set(r["metrics"]) == ({"validation"} if r["spec"]["phase"] == "select" else {"test"}) for r in records)
    multivector = next(r for r in records if r["spec"]["arm"] == "multivector32" and r["spec"]["phase"] == "main")
    views = set(multivector["metrics"]["test"])
    assert {"multivector32_pooled", "multivector32_unpooled"} <= views
    assert {f"multivector32_muvera_{design}_{source}" for design in config["muvera"]["designs"]
            for source in ("pooled", "unpooled")} <= views
    # Pooled documents keep at most max_tokens vectors of 32 floats.
    assert multivector["metrics"]["test"]["multivector32_pooled"]["scifact"]["bytes_per_document"] <= 16 * 32 * 4
    results = (output / "results.md").read_text()
    for row in ("`oblique16`", "`multivector32_pooled16`", "`multivector32_muvera512`", "`multivector32_unpooled`",
                "`single512`", "Paired differences", "## Speed and index size", "**chosen**"):
        assert row in results
    assert (output / "quality.png").stat().st_size > 1000 and (output / "speed.png").stat().st_size > 1000
    summary = json.loads((output / "summary.json").read_text())
    assert summary["runs_executed"] == len(records)
    # Run again: every record and the timings are reused; nothing is trained.
    (output / "results.md").unlink()
    assert main([*argv, "--phase", "report"]) == 0
    again = json.loads((output / "summary.json").read_text())
    assert again["runs_executed"] == 0 and again["runs_reused"] == len(records) and "## Speed" in (output / "results.md").read_text()
