"""An oblique model served with sentence-transformers' ``semantic_search_faiss`` / ``semantic_search_usearch`` at
float32, int8 and binary precision.

An oblique embedding is K unit tokens flattened, so an inner-product index (faiss ``IndexFlatIP``, usearch ``ip``)
scores with the sum of the K per-token cosines: exactly ``model.similarity``. Quantized corpora are checked against
an independent NumPy computation of what the precision keeps (int8 buckets, sign bits)."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers.util.quantization import (
    quantize_embeddings,
    semantic_search_faiss,
    semantic_search_usearch,
)
from serving.served import TOP_K, K

pytestmark = pytest.mark.serving

faiss = pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install 'st-oblique[serve]')")
usearch_index = pytest.importorskip(
    "usearch.index", reason="usearch is not installed (pip install 'st-oblique[serve]')"
)


def ids_and_scores(results) -> tuple[list[list[int]], np.ndarray]:
    return [[hit["corpus_id"] for hit in hits] for hits in results], np.array(
        [[hit["score"] for hit in hits] for hits in results]
    )


def assert_exact_top(served, ids, scores, reference, *, atol):
    """The hits are the exact top-k of ``reference`` (as a multiset of scores, so ties may come in any order)
    and each hit's score is its reference score."""
    expected = np.sort(reference, axis=1)[:, ::-1][:, :TOP_K]
    for query, hits in enumerate(ids):
        assert len(hits) == TOP_K and len(set(hits)) == TOP_K
        np.testing.assert_allclose(scores[query], reference[query, hits], atol=atol)
        np.testing.assert_allclose(np.sort(scores[query])[::-1], expected[query], atol=atol)


def int8_reference(served, precision: str):
    """What an int8/uint8 corpus keeps, recomputed with NumPy: 256 buckets per dimension between the corpus's min
    and max, each value replaced by its bucket's lower edge."""
    ranges = np.vstack([served.corpus_embeddings.min(0), served.corpus_embeddings.max(0)])  # float32, as stored
    steps = (ranges[1] - ranges[0]) / np.float32(255)
    buckets = np.clip(np.floor((served.corpus_embeddings - ranges[0]) / steps), 0, 255).astype(np.float64)
    quantized = quantize_embeddings(
        served.corpus_embeddings, precision, calibration_embeddings=served.corpus_embeddings
    )
    np.testing.assert_array_equal(quantized.astype(np.int64), buckets - (128 if precision == "int8" else 0))
    dequantized = buckets * steps.astype(np.float64) + ranges[0].astype(np.float64)
    return quantized, served.query_embeddings.astype(np.float64) @ dequantized.T


def binary_reference(served, precision: str):
    """What a binary corpus keeps: the sign bit of every coordinate; rescored against the float query as 0/1."""
    bits = (served.corpus_embeddings > 0).astype(np.float64)
    quantized = quantize_embeddings(served.corpus_embeddings, precision)
    packed = np.packbits(served.corpus_embeddings > 0, axis=-1)
    np.testing.assert_array_equal(quantized.view(np.uint8) ^ (0x80 if precision == "binary" else 0), packed)
    return quantized, served.query_embeddings.astype(np.float64) @ bits.T


def test_faiss_float32_inner_product_is_model_similarity(served):
    results, _ = semantic_search_faiss(
        served.query_embeddings, served.corpus_embeddings, corpus_precision="float32", top_k=TOP_K, rescore=False
    )
    ids, scores = ids_and_scores(results)
    assert ids == served.top(served.scores)
    similarity = served.model.similarity(served.query_embeddings, served.corpus_embeddings).numpy()
    np.testing.assert_allclose(scores, np.take_along_axis(similarity, np.array(ids), axis=1), atol=1e-5)
    assert_exact_top(served, ids, scores, served.scores, atol=1e-5)


@pytest.mark.parametrize("precision", ["uint8", "ubinary"])
def test_faiss_quantized_corpus(served, precision):
    reference_of = int8_reference if precision == "uint8" else binary_reference
    corpus, reference = reference_of(served, precision)
    # rescoring every candidate: the hits are the exact top-k of (float query) x (what the corpus kept)
    results, _ = semantic_search_faiss(
        served.query_embeddings,
        corpus,
        corpus_precision=precision,
        top_k=TOP_K,
        calibration_embeddings=served.corpus_embeddings,
        rescore_multiplier=len(served.corpus) // TOP_K + 1,
    )
    ids, scores = ids_and_scores(results)
    assert_exact_top(served, ids, scores, reference, atol=1e-4)
    if precision == "ubinary":  # without rescoring the score is faiss's Hamming distance between the sign bits
        results, _ = semantic_search_faiss(
            served.query_embeddings, corpus, corpus_precision=precision, top_k=TOP_K, rescore=False
        )
        ids, distances = ids_and_scores(results)
        query_bits = served.query_embeddings[:, None, :] > 0
        hamming = (query_bits != (served.corpus_embeddings[None, :, :] > 0)).sum(-1)
        assert_exact_top(served, ids, -distances, -hamming.astype(np.float64), atol=0)


def test_usearch_float32_inner_product_is_model_similarity(served):
    """usearch's ``ip`` metric reports the distance 1 - dot; ST's default float32 index uses ``cos``, which ranks the
    same for oblique embeddings (their norm is always sqrt(K)) and reports 1 - dot / K."""
    index = usearch_index.Index(ndim=served.corpus_embeddings.shape[1], metric="ip", dtype="f32")
    index.add(np.arange(len(served.corpus)), served.corpus_embeddings)
    results, _ = semantic_search_usearch(
        served.query_embeddings, corpus_index=index, corpus_precision="float32", top_k=TOP_K, rescore=False
    )
    ids, distances = ids_and_scores(results)
    assert ids == served.top(served.scores)
    assert_exact_top(served, ids, 1 - distances, served.scores, atol=1e-4)

    results, _ = semantic_search_usearch(
        served.query_embeddings, served.corpus_embeddings, corpus_precision="float32", top_k=TOP_K, rescore=False
    )
    ids, distances = ids_and_scores(results)
    assert_exact_top(served, ids, (1 - distances) * K, served.scores, atol=1e-3)


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_usearch_quantized_corpus(served, precision):
    reference_of = int8_reference if precision == "int8" else binary_reference
    corpus, reference = reference_of(served, precision)
    results, _ = semantic_search_usearch(
        served.query_embeddings,
        corpus,
        corpus_precision=precision,
        top_k=TOP_K,
        calibration_embeddings=served.corpus_embeddings,
        rescore_multiplier=len(served.corpus) // TOP_K + 1,
    )
    ids, scores = ids_and_scores(results)
    assert_exact_top(served, ids, scores, reference, atol=1e-3)


def test_vector_search_int8_without_calibration_uses_the_unit_token_bounds(served):
    """Every coordinate of an oblique embedding lies in [-1, 1] (each token has unit norm), so int8 ranges need no
    calibration set: ``ranges=[[-1]*D, [1]*D]`` covers any embedding the model can produce."""
    dim = served.corpus_embeddings.shape[1]
    assert np.abs(served.corpus_embeddings).max() <= 1.0 + 1e-6
    ranges = np.vstack([-np.ones(dim), np.ones(dim)]).astype(np.float32)
    corpus = quantize_embeddings(served.corpus_embeddings, "int8", ranges=ranges)
    results, _ = semantic_search_usearch(
        served.query_embeddings,
        corpus,
        corpus_precision="int8",
        top_k=TOP_K,
        ranges=ranges,
        rescore_multiplier=len(served.corpus) // TOP_K + 1,
    )
    ids, scores = ids_and_scores(results)
    dequantized = (corpus.astype(np.float64) + 128) * (2 / 255) - 1
    assert_exact_top(served, ids, scores, served.query_embeddings.astype(np.float64) @ dequantized.T, atol=1e-3)
    np.testing.assert_allclose(dequantized, served.corpus_embeddings, atol=2 / 255 + 1e-6)
