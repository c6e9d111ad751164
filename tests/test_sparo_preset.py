"""The Sparo preset (st_oblique.builders.SPARO): its head, its loss against Sparo's formula in float64, its citation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_models import SENTENCES

import st_oblique
from st_oblique.builders import SPARO
from st_oblique.citations import SPARO_CITATION

K, D = 4, 8


@pytest.fixture(scope="module")
def sparo_model(tiny_bert_dir):
    torch.manual_seed(0)
    return SPARO.apply(
        st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D, token_source="attention")
    )


def test_head_is_single_head_attention_slots(sparo_model):
    pooling = sparo_model[1]
    head = pooling.heads["default"]
    assert head.token_source == "attention" and head.attention.num_heads == 1
    assert head.projection.shape[0] == K  # one projection per slot
    assert isinstance(head.norm, torch.nn.Identity)
    assert sparo_model.similarity_fn_name == "dot"


def sparo_embeddings(oblique: torch.Tensor) -> torch.Tensor:
    """Sparo's embedding: each slot L2-normalized and scaled by 1/sqrt(L), concatenated (float64)."""
    slots = oblique.double()
    return (F.normalize(slots, dim=-1) / math.sqrt(slots.shape[1])).flatten(1)


def test_loss_is_clip_loss_on_sparo_embeddings(sparo_model):
    """InfoNCE with CLIP's temperature on Sparo's unit embeddings (dot = mean of the slot cosines)."""
    loss = st_oblique.ObliqueContrastiveLoss(sparo_model, **SPARO.loss_options)
    assert loss.learnable_scale and loss.scale == pytest.approx(1 / 0.07, rel=1e-6) and loss.max_scale == 100.0
    anchors = sparo_model.encode(SENTENCES[:4], convert_to_tensor=True, output_value=None)
    positives = sparo_model.encode(SENTENCES[4:8], convert_to_tensor=True, output_value=None)
    a = torch.stack([item["oblique_embeddings"] for item in anchors])
    p = torch.stack([item["oblique_embeddings"] for item in positives])
    logits = (1 / 0.07) * sparo_embeddings(a) @ sparo_embeddings(p).T
    target = torch.arange(4)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    with torch.no_grad():
        actual = loss.compute_loss_from_embeddings([a.flatten(1), p.flatten(1)])
    assert abs(actual.item() - expected.item()) < 1e-5
    # the model's score is the sum, Sparo's the mean
    scores = sparo_model.similarity(a.flatten(1), p.flatten(1)).double()
    torch.testing.assert_close(scores / K, sparo_embeddings(a) @ sparo_embeddings(p).T, atol=1e-5, rtol=0)


def test_citation_names_sparo_with_the_mean_only(sparo_model):
    assert SPARO_CITATION in st_oblique.ObliqueContrastiveLoss(sparo_model, **SPARO.loss_options).citation
    assert SPARO_CITATION not in st_oblique.ObliqueContrastiveLoss(sparo_model).citation
    assert "Vani" in SPARO.citation


def test_apply_refuses_towers_with_class_tokens(tiny_bert_dir):
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D)  # "first": K class tokens
    with pytest.raises(ValueError, match="token_source='attention'"):
        SPARO.apply(model)
