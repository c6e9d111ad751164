"""ObliqueContrastiveLoss: symmetric InfoNCE over the oblique similarity (sum of per-token cosines)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.merged_forward import embed_columns
from torch import Tensor, nn

CITATION = """@article{sun2022design,
    title={Design of the topology for contrastive visual-textual alignment},
    author={Sun, Zhun},
    journal={arXiv preprint arXiv:2209.02127},
    year={2022}
}"""


class ObliqueContrastiveLoss(nn.Module):
    """Symmetric InfoNCE (CLIP's loss) over the oblique similarity ``s(u, v) = sum_k cos(u_k, v_k)``.

    The similarity of flat oblique embeddings is their dot product, in ``[-K, K]``; logits are
    ``scale * s``. With the default ``scale=1.0`` logits are the raw sums, as in the paper's official code.

    Inputs are (anchor, positive) pairs or (anchor, positive, negative_1, ..., negative_n) tuples, of text or
    images: every other positive (and every negative) in the batch is a negative for an anchor, and every
    other anchor is a negative for a positive.

    Args:
        model: the oblique SentenceTransformer being trained.
        scale: the multiplier on the oblique similarity (inverse temperature).

    Example::

        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer
        import st_oblique

        model = st_oblique.oblique_text_model("sentence-transformers/all-MiniLM-L6-v2")
        train = Dataset.from_dict({"anchor": ["A man eats."], "positive": ["Someone is eating."]})
        trainer = SentenceTransformerTrainer(model=model, train_dataset=train,
                                             loss=st_oblique.ObliqueContrastiveLoss(model))
        trainer.train()
    """

    def __init__(self, model: SentenceTransformer, scale: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.scale = float(scale)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        """Loss from flat embeddings: ``embeddings[0]`` anchors ``(B, K*d)``, ``embeddings[1]`` positives, rest negatives."""
        anchors, candidates = embeddings[0], torch.cat(embeddings[1:])
        batch = anchors.shape[0]
        targets = torch.arange(batch, device=anchors.device)
        logits = self.scale * anchors @ candidates.T  # (B, B * (columns - 1))
        anchor_to_candidate = F.cross_entropy(logits, targets)
        candidate_to_anchor = F.cross_entropy(logits[:, :batch].T, targets)
        return (anchor_to_candidate + candidate_to_anchor) / 2

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}

    @property
    def citation(self) -> str:
        return CITATION
