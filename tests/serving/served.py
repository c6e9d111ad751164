"""Shared by the serving tests: an oblique model, a small corpus and queries, their embeddings, and the exact reference scores every vector-search
test compares with (float64 dot products = sums of K per-token cosines, and ``model.similarity``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from tiny_models import WORDS

import st_oblique

K, D = 8, 16
TOP_K = 10


@dataclass
class Served:
    model: st_oblique.ObliqueSentenceTransformer
    corpus: list[str]
    queries: list[str]
    corpus_embeddings: np.ndarray  # (N, K*d) float32
    query_embeddings: np.ndarray  # (Q, K*d) float32
    scores: np.ndarray  # (Q, N) float64: sum of the K per-token cosines

    def top(self, scores: np.ndarray, k: int = TOP_K) -> list[list[int]]:
        """The exact top-k corpus ids of every query (ties broken by id)."""
        return [sorted(range(scores.shape[1]), key=lambda i: (-row[i], i))[:k] for row in scores]


def build_served(tiny_bert_dir: str) -> Served:
    torch.manual_seed(0)
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D)
    rng = np.random.default_rng(0)
    corpus = [" ".join(rng.choice(WORDS, size=7)) for _ in range(64)]
    queries = [" ".join(words) for words in itertools.islice(itertools.combinations(WORDS[10:20], 3), 6)]
    corpus_embeddings = model.encode(corpus, convert_to_numpy=True)
    query_embeddings = model.encode(queries, convert_to_numpy=True)
    tokens = lambda x: x.astype(np.float64).reshape(len(x), K, D)  # noqa: E731
    per_token_cosines = np.einsum(
        "qkd,nkd->qnk",
        tokens(query_embeddings) / np.linalg.norm(tokens(query_embeddings), axis=-1, keepdims=True),
        tokens(corpus_embeddings) / np.linalg.norm(tokens(corpus_embeddings), axis=-1, keepdims=True),
    )
    scores = per_token_cosines.sum(-1)
    np.testing.assert_allclose(model.similarity(query_embeddings, corpus_embeddings).numpy(), scores, atol=1e-5)
    return Served(model, corpus, queries, corpus_embeddings, query_embeddings, scores)
