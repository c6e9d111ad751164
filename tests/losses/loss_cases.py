"""Shared inputs of the loss tests (imported as ``losses.loss_cases``; tests/ is on the path)."""

from __future__ import annotations

import torch
from tiny_models import SENTENCES
from torch import nn

from st_oblique import ObliqueContrastiveLoss, ObliqueSigmoidLoss, manifold, oblique_text_model
from st_oblique.modules.pooling import ObliquePooling

NUM_TOKENS, TOKEN_DIM = 4, 8
GLOBAL_BATCH = 6


def pooling_holder(num_tokens: int = NUM_TOKENS, token_dim: int = TOKEN_DIM) -> nn.Module:
    """The smallest module an oblique loss accepts as its model (it reads K and d from the ObliquePooling)."""
    return nn.Sequential(ObliquePooling(4, num_tokens=num_tokens, token_dim=token_dim))


def global_embeddings(
    num_columns: int = 2,
    batch_size: int = GLOBAL_BATCH,
    num_tokens: int = NUM_TOKENS,
    token_dim: int = TOKEN_DIM,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> list[torch.Tensor]:
    """``num_columns`` tensors ``(batch_size, K*d)`` on the oblique manifold, the same for a given seed.

    Positives are noisy copies of the anchors, so the loss is neither trivial nor saturated.
    """
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(batch_size, num_tokens, token_dim, generator=generator, dtype=dtype)
    columns = [base] + [
        base + 1.5 * torch.randn(batch_size, num_tokens, token_dim, generator=generator, dtype=dtype)
        for _ in range(num_columns - 1)
    ]
    return [manifold.to_flat(manifold.project(column)) for column in columns]


def embedding_cases() -> dict:
    """Loss factories ``f(gather_across_devices) -> loss`` compared at the embedding level (single vs 2 processes)."""
    return {
        "contrastive_learnable": lambda gather_across_devices: ObliqueContrastiveLoss(
            pooling_holder(), scale=2.0, learnable_scale=True, gather_across_devices=gather_across_devices
        ),
        "contrastive_negatives": lambda gather_across_devices: ObliqueContrastiveLoss(
            pooling_holder(), scale=3.0, directions=("query_to_doc",), gather_across_devices=gather_across_devices
        ),
        "sigmoid": lambda gather_across_devices: ObliqueSigmoidLoss(
            pooling_holder(), scale=1.5, gather_across_devices=gather_across_devices
        ),
    }


def oblique_model(tiny_bert_dir: str):
    torch.manual_seed(0)
    return oblique_text_model(tiny_bert_dir, num_tokens=NUM_TOKENS, token_dim=TOKEN_DIM)


def text_batch() -> list[list[str]]:
    """(anchor, positive, negative) columns of 8 texts."""
    anchors = list(SENTENCES)
    positives = [sentence.replace("the", "a") + " in the park" for sentence in SENTENCES]
    negatives = [sentence + " with a dog" for sentence in reversed(SENTENCES)]
    return [anchors, positives, negatives]
