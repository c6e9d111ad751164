"""ObliqueContrastiveLoss: symmetric InfoNCE over the oblique similarity (sum of per-token cosines)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Literal

import torch
from sentence_transformers.base.losses.merged_forward import embed_columns
from torch import Tensor, nn

from st_oblique.citations import PAPER_CITATION
from st_oblique.losses.base import ObliqueLoss, Reduction
from st_oblique.modules.logit_scale import KEEP

logger = logging.getLogger(__name__)


Direction = Literal["query_to_doc", "doc_to_query"]
DIRECTIONS: tuple[str, ...] = ("query_to_doc", "doc_to_query")


class ObliqueContrastiveLoss(ObliqueLoss):
    """Symmetric InfoNCE (CLIP's loss) over the oblique similarity ``s(u, v) = sum_k cos(u_k, v_k)``.

    For an (anchor, positive) batch ``a_1..a_B``, ``p_1..p_B`` the logits are ``scale * s(a_i, p_j)``, in
    ``[-K*scale, K*scale]``, and the loss is the mean of the two cross-entropies with the diagonal as target:
    anchor -> positives ("query_to_doc") and positive -> anchors ("doc_to_query"). Extra columns are hard
    negatives: they join the candidates of every anchor (not the doc_to_query term). Anchors and positives can
    be texts or images (one modality per column).

    ``s`` is the dot product of the flat ``(K*d)`` embeddings, so with K=1 this is exactly CLIP's loss
    (open_clip's ``ClipLoss``) and ST's ``MultipleNegativesRankingLoss(similarity_fct=dot_score,
    directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")``.

    The scale (inverse temperature) is the paper's whole point. Sums of K cosines already span ``[-K, K]``, so the
    official code uses the raw sums (scale 1, a new model's default), where CLIP needs a learnable scale of up to
    100 for cosines in ``[-1, 1]``. The scale belongs to the model (``model[-1].temperature``, see
    :class:`~st_oblique.modules.logit_scale.LogitScale`), as open_clip keeps ``logit_scale`` on its model: any
    trainer (``SentenceTransformerTrainer``, ``model.fit``) trains a learnable one without weight decay, saves it
    with the weights, restores it when resuming from a checkpoint and all-reduces its gradient under DDP. This
    loss's ``scale``, ``learnable_scale`` and ``max_scale`` set the model's scale up when given; its own learning
    rate: ``learning_rate_mapping={r"temperature": 1e-3}``. :class:`~st_oblique.ObliqueTrainer` also logs it.

    Every step checks that the embeddings are ``(B, K*d)``, finite and on the oblique manifold (each token of unit
    norm), with one device synchronization, and raises a ValueError naming the cause otherwise (e.g. a
    ``Normalize`` module after the pooling). A batch whose only pair is (anchor, positive) has no negatives: the
    loss is 0 with zero gradient, which is logged as a warning (use ``dataloader_drop_last=True``).

    Args:
        model: the oblique SentenceTransformer being trained.
        scale: set the model's logit scale (the multiplier on the oblique similarity); its initial value when
            learnable. None (default) keeps the model's: 1 for a new model, the learned value for a trained one.
        learnable_scale: set whether the model learns its scale (log-parameterized, like CLIP); None keeps the
            model's setting (fixed for a new model).
        max_scale: set the cap of a learnable scale (None: no cap); by default the model's (100, open_clip's, for a
            new model; the paper caps its oblique model at 3.95,
            :data:`st_oblique.modules.logit_scale.PAPER_MAX_SCALE`).
        directions: ``("query_to_doc", "doc_to_query")`` (symmetric, CLIP; default) or ``("query_to_doc",)``
            (anchors retrieve candidates only; the usual choice with many hard negatives).
        gather_across_devices: all-gather anchors and candidates from every process (with gradients), so each
            anchor sees the global batch as negatives, like open_clip's ``gather_with_grad``. Every process must
            have the same batch size (``dataloader_drop_last=True``).
        reduction: ``"sum"`` (default, the paper: logits ``scale * sum_k cos``) or ``"mean"`` (Sparo: logits
            ``scale * mean_k cos``, so CLIP's temperature init 1/0.07 and cap 100 apply unchanged); see
            :class:`~st_oblique.losses.base.ObliqueLoss`.

    Requirements:
        1. An oblique model: an :class:`~st_oblique.ObliquePooling` with no module after it that changes the
           embeddings (no ``Normalize``).
        2. (anchor, positive) pairs, or (anchor, positive, negative_1, ..., negative_n) tuples; each column holds one
           modality (texts, or images: paths, PIL images or arrays).

    Inputs:
        +-------------------------------------------------+--------+
        | Texts or images (one modality per column)       | Labels |
        +=================================================+========+
        | (anchor, positive) pairs                        | none   |
        +-------------------------------------------------+--------+
        | (anchor, positive, negative_1, ..., negative_n) | none   |
        +-------------------------------------------------+--------+

    Relations:
        - With K=1 it is open_clip's ``ClipLoss`` and ST's ``MultipleNegativesRankingLoss`` with ``dot_score``,
          both directions and ``partition_mode="per_direction"`` (the tests check both).
        - :class:`~st_oblique.CachedObliqueContrastiveLoss` is the same loss with gradient caching (batches larger
          than memory); :class:`~st_oblique.ObliqueSigmoidLoss` is SigLIP's pairwise alternative;
          :class:`~st_oblique.ObliqueMatryoshkaLoss` trains it at nested token prefixes.

    Example::

        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer
        import st_oblique

        model = st_oblique.oblique_text_model("sentence-transformers/all-MiniLM-L6-v2", num_tokens=16, token_dim=32)
        train = Dataset.from_dict({
            "anchor": ["A man eats food.", "A dog runs in the park."],
            "positive": ["Someone is eating.", "An animal is running."],
        })
        loss = st_oblique.ObliqueContrastiveLoss(model, learnable_scale=True, max_scale=3.95)
        SentenceTransformerTrainer(model=model, train_dataset=train, loss=loss).train()
        print(model[-1].logit_scale)   # the learned scale, saved with the model
    """

    def __init__(
        self,
        model: nn.Module,
        scale: float | None = None,
        learnable_scale: bool | None = None,
        max_scale: Any = KEEP,
        directions: tuple[Direction, ...] = DIRECTIONS,
        gather_across_devices: bool = False,
        reduction: Reduction = "sum",
    ) -> None:
        super().__init__(model, scale, learnable_scale, max_scale, gather_across_devices, reduction)
        self.directions = check_directions(directions)
        self._warned_no_negatives = False

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        """The loss of flat embeddings: ``embeddings[0]`` anchors ``(B, K*d)``, ``[1]`` positives, the rest negatives.

        ``labels`` are ignored (the positive of anchor i is positive i).
        """
        self.check_embeddings(embeddings)
        self.warn_if_no_negatives(len(embeddings), embeddings[0].shape[0])
        scale = self.similarity_scale()
        columns, offset = self.gather(embeddings)
        batch_size = embeddings[0].shape[0]
        rows = torch.arange(offset, offset + batch_size, device=embeddings[0].device)
        return info_nce_row_losses(columns[0], torch.cat(columns[1:]), rows, scale, self.directions).mean()

    def warn_if_no_negatives(self, num_columns: int, batch_size: int) -> None:
        """Warn once when a batch of ``batch_size`` rows (this process's) in ``num_columns`` columns has no negatives."""
        if num_columns == 2 and self.global_batch_size(batch_size) == 1 and not self._warned_no_negatives:
            self._warned_no_negatives = True
            logger.warning(
                f"{type(self).__name__} got a batch with a single (anchor, positive) pair and no negatives: its loss is "
                "0 and it gives no gradient. Use batches of at least 2 pairs (e.g. dataloader_drop_last=True, so the "
                "last batch of an epoch is not a single pair)."
            )

    def get_config_dict(self) -> dict[str, Any]:
        return {**self.base_config(), "directions": self.directions}

    @property
    def citation(self) -> str:
        return self.with_reduction_citation(PAPER_CITATION)


def info_nce_row_losses(
    anchors: Tensor, candidates: Tensor, rows: Tensor, scale: Tensor | float, directions: tuple[str, ...]
) -> Tensor:
    """The InfoNCE loss terms of the pairs ``rows``, against every anchor and candidate.

    Args:
        anchors: ``(N, D)``, every anchor of the batch (all processes' anchors when gathered).
        candidates: ``(M*N, D)``: the N positives (positive i belongs to anchor i), then each negative column.
        rows: ``(R,)`` indices of the pairs whose terms to compute (a chunk of a cached loss, or this process's
            rows of a gathered batch).
        scale: the logit scale.
        directions: ``"query_to_doc"`` and optionally ``"doc_to_query"``.

    Returns:
        ``(R,)``: ``logsumexp_j(scale * <a_i, c_j>) - scale * <a_i, p_i>``, averaged with the positive -> anchors
        term ``logsumexp_j(scale * <p_i, a_j>) - scale * <a_i, p_i>`` when both directions are used. The loss of
        a batch is their mean over all N rows.
    """
    # The scale multiplies the (R, D) rows rather than the (R, M*N) logits: the same logits, less work for a
    # learnable scale's gradient.
    logits = (scale * anchors[rows]) @ candidates.T  # (R, M*N)
    positive = logits[torch.arange(len(rows), device=logits.device), rows]
    losses = logits.logsumexp(dim=1) - positive
    if "doc_to_query" in directions:
        reverse = (scale * candidates[rows]) @ anchors.T  # (R, N)
        losses = (losses + reverse.logsumexp(dim=1) - positive) / 2
    return losses


def check_directions(directions: Iterable[str]) -> tuple[str, ...]:
    directions = tuple(directions)
    if "query_to_doc" not in directions or not set(directions) <= set(DIRECTIONS) or len(set(directions)) != len(directions):
        raise ValueError(
            f"directions must be ('query_to_doc', 'doc_to_query') (symmetric, CLIP) or ('query_to_doc',), got "
            f"{directions!r}. For query_to_query / doc_to_doc terms use MultipleNegativesRankingLoss with "
            "similarity_fct=dot_score."
        )
    return directions
