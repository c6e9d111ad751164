"""The oblique MiniLM built from the real all-MiniLM-L6-v2 weights in ../shared (skipped when absent)."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

import st_oblique
from st_oblique import manifold
from st_oblique.modules import ClassTokenTransformer


def stsb_test_sentences(shared, limit: int) -> list[str]:
    sentences = []
    with open(shared / "data/stsbenchmark/stsbenchmark/sts-test.csv", encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            sentences += fields[5:7]
            if len(sentences) >= limit:
                break
    return sentences[:limit]


@pytest.fixture(scope="module")
def minilm(shared):
    return str(shared / "weights/all-MiniLM-L6-v2")


def test_oblique_minilm_encodes_stsb(minilm, shared):
    sentences = stsb_test_sentences(shared, 64)
    model = st_oblique.oblique_text_model(minilm, num_tokens=16, token_dim=32)
    assert model[0].max_seq_length == 256  # kept from the ST model's sentence_bert_config.json
    embeddings = model.encode(sentences, batch_size=32, convert_to_tensor=True)
    assert embeddings.shape == (64, 512)
    assert manifold.is_on_manifold(embeddings, num_tokens=16)
    features = model.preprocess(sentences[:2])
    assert (features["input_ids"][:, :16] == model[0].tokenizer.cls_token_id).all()


def test_one_class_token_reproduces_the_published_model(minilm, shared):
    sentences = stsb_test_sentences(shared, 32)
    published = SentenceTransformer(minilm, device="cpu")
    backbone = ClassTokenTransformer.load(minilm, init_defaults={"num_class_tokens": 1})
    rebuilt = SentenceTransformer(modules=[backbone, Pooling(384, "mean"), Normalize()], device="cpu")
    torch.testing.assert_close(
        rebuilt.encode(sentences, convert_to_tensor=True), published.encode(sentences, convert_to_tensor=True),
        atol=1e-6, rtol=0,
    )
