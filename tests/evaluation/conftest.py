"""Tiny image-text models and data shared by the evaluation tests (built once per session, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from tiny_models import tiny_clip, tiny_data_root, tiny_oblique_clip

from st_oblique.data.datasets import load_dataset


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> str:
    return tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def clip_model(tiny_clip_dir) -> SentenceTransformer:
    """An ordinary CLIP through ST's own Transformer: pooled, projected embeddings, cosine similarity."""
    return SentenceTransformer(tiny_clip_dir, device="cpu")


@pytest.fixture(scope="session")
def text_model(tiny_bert_dir) -> SentenceTransformer:
    """An ordinary text-only model (tiny BERT + mean pooling): no image input path."""
    backbone = Transformer(tiny_bert_dir)
    return SentenceTransformer(modules=[backbone, Pooling(backbone.get_embedding_dimension())], device="cpu")


@pytest.fixture(scope="session")
def oblique_model(tiny_clip_dir):
    """An oblique image+text model, K=4 tokens of d=8."""
    return tiny_oblique_clip(tiny_clip_dir, num_tokens=4, token_dim=8)


@pytest.fixture(scope="session")
def oblique_k1_model(tiny_clip_dir):
    """An oblique model with a single token (K=1, d=8): must behave exactly like an ordinary cosine model."""
    return tiny_oblique_clip(tiny_clip_dir, num_tokens=1, token_dim=8, seed=1)


@pytest.fixture(scope="session")
def digits():
    """80 of scikit-learn's bundled 8x8 digits (ships with scikit-learn: no files, no download)."""
    return load_dataset("sklearn_digits", max_samples=80)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root laid out like ../shared/data, with tiny versions of the sets (real formats, random content)."""
    return tiny_data_root(tmp_path_factory.mktemp("data"))
