"""ObliqueSigmoidLoss: SigLIP's pairwise sigmoid loss over the oblique similarity."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.util import all_gather_with_grad, get_rank
from torch import Tensor, nn

from st_oblique.citations import SIGLIP_CITATION
from st_oblique.losses.base import ObliqueLoss, Reduction
from st_oblique.modules.logit_scale import KEEP


class ObliqueSigmoidLoss(ObliqueLoss):
    """SigLIP's sigmoid loss over the oblique similarity ``s(u, v) = sum_k cos(u_k, v_k)`` in ``[-K, K]``.

    Every (anchor i, candidate j) pair is an independent binary classification with logit
    ``scale * s(a_i, c_j) + bias``: positive for ``j == i``, negative otherwise (other positives and every hard
    negative column). The loss is ``-sum_ij log sigmoid(label_ij * logit_ij) / B``, as in open_clip's
    ``SigLipLoss``; with K=1 it is exactly that loss. No softmax over the batch, so no global view is needed.

    SigLIP initializes ``scale=10, bias=-10`` for cosines in ``[-1, 1]``: a perfectly aligned pair starts at logit
    0 and the many negatives start near probability 0. The oblique analogue, the default here, is scale 1 (the
    raw sums, as in :class:`ObliqueContrastiveLoss`) and ``bias = -scale * K``. Both are learnable by default (as in
    SigLIP). Both belong to the model (``model[-1].temperature``, see
    :class:`~st_oblique.modules.logit_scale.LogitScale`): any trainer trains them without weight decay, saves them
    with the weights, restores them on resume and all-reduces their gradients under DDP;
    :class:`~st_oblique.ObliqueTrainer` logs them as ``logit_scale`` / ``logit_bias``.

    Args:
        model: the oblique SentenceTransformer being trained.
        scale: set the model's logit scale (its initial value when learnable); None keeps the model's (1 for a new
            model).
        bias: set the model's logit bias (its initial value when learnable); None keeps the model's bias, or, for a
            model without one, starts at ``-scale * K`` (``-scale`` with ``reduction="mean"``).
        learnable_scale: learn the scale (log-parameterized; default True); None keeps the model's setting.
        learnable_bias: learn the bias (default True).
        max_scale: set the cap of a learnable scale (None: no cap); by default the model's (100 for a new model).
        gather_across_devices: all-gather the candidates of every process (with gradients), so each anchor is
            classified against the global batch. Every process must have the same batch size.
        reduction: ``"sum"`` (default) or ``"mean"`` of the K cosines.

    Requirements:
        1. An oblique model (an :class:`~st_oblique.ObliquePooling`, no ``Normalize`` after it).
        2. (anchor, positive) pairs, or (anchor, positive, negative_1, ..., negative_n) tuples; each column holds one
           modality (texts, or images).

    Inputs:
        +-------------------------------------------------+--------+
        | Texts or images (one modality per column)       | Labels |
        +=================================================+========+
        | (anchor, positive) pairs                        | none   |
        +-------------------------------------------------+--------+
        | (anchor, positive, negative_1, ..., negative_n) | none   |
        +-------------------------------------------------+--------+

    Relations:
        - With K=1 it is open_clip's ``SigLipLoss`` (the tests check it).
        - :class:`ObliqueContrastiveLoss` is the softmax (InfoNCE) alternative; it ignores the bias.

    Example::

        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer
        import st_oblique

        model = st_oblique.oblique_text_model("sentence-transformers/all-MiniLM-L6-v2", num_tokens=16, token_dim=32)
        train = Dataset.from_dict({
            "anchor": ["A man eats food.", "A dog runs in the park."],
            "positive": ["Someone is eating.", "An animal is running."],
        })
        loss = st_oblique.ObliqueSigmoidLoss(model)     # scale 1, bias -16, both learned
        SentenceTransformerTrainer(model=model, train_dataset=train, loss=loss).train()
        print(model[-1].logit_scale, model[-1].logit_bias)
    """

    def __init__(
        self,
        model: nn.Module,
        scale: float | None = None,
        bias: float | None = None,
        learnable_scale: bool | None = True,
        learnable_bias: bool = True,
        max_scale: Any = KEEP,
        gather_across_devices: bool = False,
        reduction: Reduction = "sum",
    ) -> None:
        super().__init__(model, scale, learnable_scale, max_scale, gather_across_devices, reduction)
        if bias is None:
            bias = self.logit_scale.bias
        if bias is None:
            bias = -self.scale * (self.num_tokens if reduction == "sum" else 1)
        self.logit_scale.configure_bias(bias, learnable=learnable_bias)

    @property
    def bias(self) -> float:
        """The model's current logit bias."""
        return self.logit_scale.bias

    @property
    def learnable_bias(self) -> bool:
        return self.logit_scale.learnable_bias

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        """The loss of flat embeddings: ``embeddings[0]`` anchors ``(B, K*d)``, ``[1]`` positives, the rest negatives."""
        self.check_embeddings(embeddings)
        anchors, candidate_columns = embeddings[0], embeddings[1:]
        batch_size = anchors.shape[0]
        offset = 0
        if self.gather_across_devices:
            # Local anchors against every process's candidates covers each pair of the global batch exactly once.
            candidate_columns = [all_gather_with_grad(column) for column in candidate_columns]
            offset = get_rank() * batch_size
        logits = self.similarity_scale() * (anchors @ torch.cat(candidate_columns).T) + self.logit_scale.bias_tensor()
        signs = -torch.ones_like(logits)
        rows = torch.arange(batch_size, device=logits.device)
        signs[rows, rows + offset] = 1.0
        return -F.logsigmoid(signs * logits).sum() / batch_size

    def get_config_dict(self) -> dict[str, Any]:
        return {**self.base_config(), "bias": self.bias, "learnable_bias": self.learnable_bias}

    @property
    def citation(self) -> str:
        # The sigmoid loss's paper; the model card of an oblique model (ObliqueModelCardData) always cites the
        # oblique paper too.
        return self.with_reduction_citation(SIGLIP_CITATION)
