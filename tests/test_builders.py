from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from tiny_models import SENTENCES

import st_oblique
from st_oblique import manifold
from st_oblique.modules import ClassTokenTransformer, ObliquePooling


def test_oblique_text_model_builds_the_paper_design(tiny_bert_dir):
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=4, token_dim=8)
    backbone, pooling = model[0], model[1]
    assert isinstance(backbone, ClassTokenTransformer) and backbone.num_class_tokens == 4
    assert isinstance(pooling, ObliquePooling) and pooling.token_source == "first"
    embeddings = model.encode(SENTENCES, convert_to_tensor=True)
    assert embeddings.shape == (len(SENTENCES), 32)
    assert manifold.is_on_manifold(embeddings, num_tokens=4)
    scores = model.similarity(embeddings, embeddings)
    torch.testing.assert_close(scores.diagonal(), torch.full((len(SENTENCES),), 4.0))
    assert model.similarity_fn_name == "dot"


@pytest.mark.parametrize("source", ["attention", "split"])
def test_pooling_sources_leave_the_encoder_unchanged(tiny_bert_dir, source):
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=4, token_dim=8, token_source=source)
    assert model[0].num_class_tokens == 1


def test_last_is_refused_for_bidirectional_encoders(tiny_bert_dir):
    with pytest.raises(ValueError, match="causal"):
        st_oblique.oblique_text_model(tiny_bert_dir, token_source="last")


def test_builds_from_a_sentence_transformers_folder(tiny_bert_dir, tmp_path):
    transformer = Transformer(tiny_bert_dir, max_seq_length=12)
    SentenceTransformer(modules=[transformer, Pooling(32), Normalize()]).save(str(tmp_path))
    model = st_oblique.oblique_text_model(str(tmp_path), num_tokens=3, token_dim=4)
    assert [type(module).__name__ for module in model] == ["ClassTokenTransformer", "ObliquePooling"]
    assert model[0].max_seq_length == 12  # the saved setting of the ST model is kept
    assert model.preprocess([" ".join(["the man"] * 40)])["input_ids"].shape[1] == 12 + 2
    assert st_oblique.oblique_text_model(str(tmp_path), 3, 4, max_seq_length=6)[0].max_seq_length == 6
