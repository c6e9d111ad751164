"""ObliqueSigmoidLoss: SigLIP's pairwise sigmoid loss over the oblique similarity."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.util import all_gather_with_grad, get_rank
from torch import Tensor, nn

from st_oblique.citations import SIGLIP_CITATION
from st_oblique.losses.base import ObliqueLoss, Reduction
from st_oblique.losses.scale import OPEN_CLIP_MAX_SCALE, average_gradient_across_ranks


class ObliqueSigmoidLoss(ObliqueLoss):
    """SigLIP's sigmoid loss over the oblique similarity ``s(u, v) = sum_k cos(u_k, v_k)`` in ``[-K, K]``.

    Every (anchor i, candidate j) pair is an independent binary classification with logit
    ``scale * s(a_i, c_j) + bias``: positive for ``j == i``, negative otherwise (other positives and every hard
    negative column). The loss is ``-sum_ij log sigmoid(label_ij * logit_ij) / B``, as in open_clip's
    ``SigLipLoss``; with K=1 it is exactly that loss. No softmax over the batch, so no global view is needed.

    SigLIP initializes ``scale=10, bias=-10`` for cosines in ``[-1, 1]``: a perfectly aligned pair starts at logit
    0 and the many negatives start near probability 0. The oblique analogue, the default here, is ``scale=1``
    (the raw sums, as in :class:`ObliqueContrastiveLoss`) and ``bias = -scale * K``. Both are learnable by default
    (as in SigLIP); trained with ``SentenceTransformerTrainer`` or ``model.fit`` they get no weight decay, are
    logged as ``logit_scale`` / ``logit_bias`` (with :class:`~st_oblique.ObliqueTrainer`), and both are recorded in
    the model's ObliquePooling config (``logit_scale``, ``logit_bias``), so they are saved with the model.

    Args:
        model: the oblique SentenceTransformer being trained.
        scale: the multiplier on the oblique similarity; the initial value when learnable.
        bias: the logit bias, or its initial value; default ``-scale * K``.
        learnable_scale: learn the scale (log-parameterized; default True).
        learnable_bias: learn the bias (default True).
        max_scale: the cap of a learnable scale (default 100; None: no cap).
        gather_across_devices: all-gather the candidates of every process (with gradients), so each anchor is
            classified against the global batch. Every process must have the same batch size.
        reduction: ``"sum"`` (default) or ``"mean"`` of the K cosines (the default bias is then ``-scale``).

    Example::

        loss = st_oblique.ObliqueSigmoidLoss(model)     # scale 1, bias -K, both learned
        SentenceTransformerTrainer(model=model, train_dataset=train, loss=loss).train()
        print(loss.scale, loss.bias)
    """

    def __init__(
        self,
        model: nn.Module,
        scale: float = 1.0,
        bias: float | None = None,
        learnable_scale: bool = True,
        learnable_bias: bool = True,
        max_scale: float | None = OPEN_CLIP_MAX_SCALE,
        gather_across_devices: bool = False,
        reduction: Reduction = "sum",
    ) -> None:
        super().__init__(model, scale, learnable_scale, max_scale, gather_across_devices, reduction)
        bias = -self.scale * (self.num_tokens if reduction == "sum" else 1) if bias is None else bias
        if not isinstance(bias, (int, float)) or not math.isfinite(bias):
            raise ValueError(f"bias must be a finite number, got {bias!r}.")
        self.learnable_bias = bool(learnable_bias)
        if self.learnable_bias:
            self.logit_bias = nn.Parameter(torch.tensor(float(bias)))
        else:
            self.logit_bias = float(bias)

    @property
    def bias(self) -> float:
        """The current logit bias."""
        return float(f"{self.logit_bias.item():.7g}") if self.learnable_bias else self.logit_bias

    def temperature_parameters(self) -> dict[str, nn.Parameter]:
        parameters = super().temperature_parameters()
        if self.learnable_bias:
            parameters["logit_bias"] = self.logit_bias
        return parameters

    def temperature_values(self) -> dict[str, float]:
        values = super().temperature_values()
        if self.learnable_bias:
            values["logit_bias"] = self.bias
        return values

    def temperature_values_to_record(self) -> dict[str, float]:
        return {**super().temperature_values_to_record(), "logit_bias": self.bias}

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
        bias = average_gradient_across_ranks(self.logit_bias) if self.learnable_bias else self.logit_bias
        logits = self.similarity_scale() * (anchors @ torch.cat(candidate_columns).T) + bias  # (B, M*N)
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
