"""ObliqueMatryoshkaLoss: an oblique loss trained at nested token prefixes (1, 2, 4, ..., K whole tokens).

The first k tokens of a point of OB(d, K) are a point of OB(d, k): ``encode(truncate_dim=k*d)`` keeps whole unit
tokens and the truncated similarity is still a sum of cosines. A model trained only at K tokens degrades when cut;
this loss trains every prefix at once, from one forward pass per batch.

Sentence Transformers' ``MatryoshkaLoss`` is wrong for oblique models: its ``shrink`` renormalizes the truncated
vector globally (each token gets norm ``1/sqrt(k)``, which divides the oblique similarity by k: a silent
temperature change, and st-oblique's losses refuse such embeddings), and it accepts cuts inside a token.
:func:`check_no_sentence_transformers_matryoshka` refuses it on oblique models (called by the model card data of
every oblique model when a trainer starts, and by :class:`~st_oblique.ObliqueTrainer`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.losses import MatryoshkaLoss
from torch import Tensor, nn

from st_oblique.citations import MATRYOSHKA_CITATION
from st_oblique.losses.base import ObliqueLoss
from st_oblique.losses.scale_gradient_replay import ScaleGradientReplay
from st_oblique.modules.shape import oblique_shape
from st_oblique.validators import check_token_counts, default_token_counts, parse_token_counts

__all__ = [
    "LOGIT_RANGES",
    "ObliqueMatryoshkaLoss",
    "check_no_sentence_transformers_matryoshka",
    "default_token_counts",
    "parse_token_counts",
]

logger = logging.getLogger(__name__)

LogitRange = Literal["matched", "raw"]
LOGIT_RANGES: tuple[str, ...] = ("matched", "raw")



class ObliqueMatryoshkaLoss(ScaleGradientReplay, CachedLossMixin, nn.Module):
    """Train an st-oblique loss at nested token prefixes: ``sum_k w_k * loss(first k tokens)``.

    For each ``k`` in ``token_counts`` the wrapped loss sees the first ``k`` whole tokens of every embedding,
    ``(B, k*d)``: unit tokens, never renormalized (a prefix of a point of OB(d, K) is a point of OB(d, k), exactly
    what ``encode(truncate_dim=k*d)`` returns at inference). The model runs once per batch; with
    :class:`~st_oblique.CachedObliqueContrastiveLoss` the prefixes share GradCache's single cached forward pass (as
    Sentence Transformers' ``MatryoshkaLoss`` does with its cached losses).

    **The logit range across prefixes.** The similarity of a k-token prefix is a sum of k cosines, in ``[-k, k]``.
    With one scale for every prefix, the 1-token term would train at a K times higher temperature than the full
    embedding (with the paper's fixed scale 1 and K=16: logits in ``[-1, 1]``, a nearly uniform softmax, and a
    SigLIP bias of ``-K`` that no 1-token pair can overcome). The default ``logit_range="matched"`` therefore
    multiplies the prefix-k logits by ``K / k``: every prefix is scored by ``scale * K * mean_{t<=k} cos``, the
    same range ``[-K*scale, K*scale]`` as the full embedding, and the full prefix (k = K) is exactly the wrapped
    loss. This is the *mean instead of the sum* over each prefix, rescaled to the full range, so one scale (fixed
    or learned) and one SigLIP bias serve every prefix. For a wrapped loss with ``reduction="mean"`` the prefix's
    mean is already what it scores, so nothing is multiplied. At inference the factor is irrelevant: rankings and
    retrieval at ``truncate_dim=k*d`` do not depend on a constant factor. ``logit_range="raw"`` scores each prefix
    with the wrapped loss's own similarity (the plain sum of k cosines), for comparison.

    Args:
        model: the oblique SentenceTransformer being trained.
        loss: an st-oblique loss: :class:`~st_oblique.ObliqueContrastiveLoss`,
            :class:`~st_oblique.CachedObliqueContrastiveLoss` or :class:`~st_oblique.ObliqueSigmoidLoss`.
        token_counts: the prefixes, in whole tokens (default 1, 2, 4, ..., K: powers of two, and K). Must lie in
            ``1..K``; K should be included (a warning says so otherwise).
        weights: one weight per prefix (default 1 each), as ``matryoshka_weights``.
        logit_range: ``"matched"`` (default, see above) or ``"raw"``.

    Requirements:
        1. An oblique model and an st-oblique loss built on it (not ST's ``MatryoshkaLoss``, which renormalizes the
           cut vector and cuts inside tokens; it is refused on oblique models).

    Inputs:
        Those of the wrapped loss: texts or images, one modality per column, as (anchor, positive[, negatives...]).

    Relations:
        - ST's ``MatryoshkaLoss`` cuts dimensions of one unit vector and renormalizes; this loss cuts whole unit
          tokens and never renormalizes (what ``truncate_dim=k*d`` returns at inference).
        - Wraps :class:`~st_oblique.ObliqueContrastiveLoss`, :class:`~st_oblique.CachedObliqueContrastiveLoss`
          (sharing its single cached forward pass) or :class:`~st_oblique.ObliqueSigmoidLoss`; they all read the
          model's one logit scale.

    Example::

        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer
        import st_oblique

        model = st_oblique.oblique_text_model("sentence-transformers/all-MiniLM-L6-v2", num_tokens=16, token_dim=32)
        train = Dataset.from_dict({
            "anchor": ["A man eats food.", "A dog runs in the park."],
            "positive": ["Someone is eating.", "An animal is running."],
        })
        loss = st_oblique.ObliqueMatryoshkaLoss(model, st_oblique.ObliqueContrastiveLoss(model))  # 1, 2, 4, 8, 16
        SentenceTransformerTrainer(model=model, train_dataset=train, loss=loss).train()
        model.encode(["A man eats food."], truncate_dim=4 * 32)   # the first 4 tokens, trained as such: (1, 128)
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        token_counts: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
        logit_range: LogitRange = "matched",
    ) -> None:
        super().__init__()
        shape = oblique_shape(model, required_by=type(self).__name__)
        if not isinstance(loss, ObliqueLoss) or not hasattr(loss, "compute_loss_from_embeddings"):
            raise ValueError(
                f"ObliqueMatryoshkaLoss wraps an st-oblique loss (ObliqueContrastiveLoss, CachedObliqueContrastiveLoss "
                f"or ObliqueSigmoidLoss), got {type(loss).__name__}. For other losses of a non-oblique model use "
                "sentence_transformers.losses.MatryoshkaLoss."
            )
        if loss.model is not model:
            raise ValueError("The wrapped loss must be built on the same model as ObliqueMatryoshkaLoss.")
        if logit_range not in LOGIT_RANGES:
            raise ValueError(f"logit_range must be one of {LOGIT_RANGES}, got {logit_range!r}.")
        self.model = model
        self.loss = loss
        self.num_tokens, self.token_dim = shape.num_tokens, shape.token_dim
        counts = default_token_counts(self.num_tokens) if token_counts is None else list(token_counts)
        self.token_counts = sorted(check_token_counts(counts, self.num_tokens))
        if weights is None:
            weights = [1.0] * len(self.token_counts)
        weights = [float(weight) for weight in weights]
        if len(weights) != len(counts) or not all(math.isfinite(weight) and weight >= 0 for weight in weights):
            raise ValueError(
                f"weights must hold one finite, non-negative number per token count ({len(counts)}: {counts}), got "
                f"{list(weights)}."
            )
        order = {count: weight for count, weight in zip(counts, weights, strict=True)}
        self.weights = [order[count] for count in self.token_counts]
        self.logit_range = logit_range
        if self.num_tokens not in self.token_counts:
            logger.warning(
                f"token_counts={self.token_counts} leaves out the model's K={self.num_tokens} tokens: the full "
                "embedding (what encode returns without truncate_dim) is not trained as such. Include "
                f"{self.num_tokens} unless you will always truncate."
            )
        # GradCache runs here when the wrapped loss uses it: one cached forward pass for every prefix.
        self.uses_gradient_cache = isinstance(loss, CachedLossMixin)
        self._log_scale_grad: Tensor | None = None

    @property
    def scale(self) -> float:
        """The wrapped loss's logit scale (shared by every prefix)."""
        return self.loss.scale

    @property
    def learnable_scale(self) -> bool:
        return self.loss.learnable_scale

    # What CachedLossMixin reads: the wrapped cached loss's settings.
    @property
    def mini_batch_size(self) -> int:
        return self.loss.mini_batch_size

    @property
    def mini_batch_num_tokens(self) -> int | None:
        return getattr(self.loss, "mini_batch_num_tokens", None)

    @property
    def show_progress_bar(self) -> bool:
        return getattr(self.loss, "show_progress_bar", False)

    def logit_factor(self, keep_tokens: int) -> float:
        """The multiplier on the prefix's logits: ``K / k`` for ``logit_range="matched"`` with ``reduction="sum"``."""
        if self.logit_range == "raw" or self.loss.reduction == "mean":
            return 1.0
        return self.num_tokens / keep_tokens

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        if not self.uses_gradient_cache:
            embeddings = embed_columns(self.model, sentence_features)
            return self.compute_loss_from_embeddings(embeddings, labels)
        sentence_features = list(sentence_features)
        if len(sentence_features) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two input columns, got {len(sentence_features)}.")
        self.loss.logit_scale.apply_cap()
        return self.forward_cached(sentence_features, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        """The nested loss of flat ``(B, K*d)`` embeddings (anchors, positives, negatives...)."""
        total: Tensor | float = 0.0
        for keep, weight in zip(self.token_counts, self.weights, strict=True):
            prefixes = [embedding[:, : keep * self.token_dim] for embedding in embeddings]
            with self.loss.at_token_prefix(keep, self.logit_factor(keep)):
                total = total + weight * self.loss.compute_loss_from_embeddings(prefixes, labels)
        return total

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        """GradCache's loss step (see ``CachedLossMixin``): the wrapped cached loss at every prefix of the cached
        mini-batch embeddings ``reps[column][mini_batch]``; with ``with_backward`` their gradients are summed into
        ``reps`` (weighted) and the scale's gradient kept for :meth:`forward`."""
        total: Tensor | float = 0.0
        for keep, weight in zip(self.token_counts, self.weights, strict=True):
            cut = [[rep[:, : keep * self.token_dim] for rep in column] for column in reps]
            leaves = [[rep.detach().requires_grad_() for rep in column] for column in cut] if with_backward else cut
            with self.loss.at_token_prefix(keep, self.logit_factor(keep)):
                value = self.loss.calculate_loss(leaves, labels, with_backward=with_backward)
            total = total + weight * value
            if not with_backward:
                continue
            for cut_column, leaf_column in zip(cut, leaves, strict=True):
                for piece, leaf in zip(cut_column, leaf_column, strict=True):
                    piece.backward(weight * leaf.grad)
            # The wrapped cached loss leaves d loss / d log_scale of its last backward step here (st-oblique's own
            # attribute; see CachedObliqueContrastiveLoss.forward).
            scale_grad = self.loss._log_scale_grad
            self.loss._log_scale_grad = None
            if scale_grad is not None:
                previous = self._log_scale_grad
                self._log_scale_grad = weight * scale_grad if previous is None else previous + weight * scale_grad
        if with_backward:
            # This loss replays the mini-batches (its own embed_minibatch): it carries the scale's gradient.
            self.loss.start_scale_replay(reps, None)
            self.start_scale_replay(reps, self._log_scale_grad)
            self._log_scale_grad = None
        return total if isinstance(total, Tensor) else torch.tensor(total)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "loss": type(self.loss).__name__,
            "token_counts": list(self.token_counts),
            "weights": list(self.weights),
            "logit_range": self.logit_range,
        }

    @property
    def citation(self) -> str:
        return MATRYOSHKA_CITATION


def check_no_sentence_transformers_matryoshka(losses: Iterable[Any], model: nn.Module) -> None:
    """Refuse Sentence Transformers' ``MatryoshkaLoss`` (or ``Matryoshka2dLoss``) on an oblique model.

    Its ``shrink`` renormalizes the truncated vector globally and accepts cuts inside a token. With an st-oblique
    loss inside it, or a dimension that cuts a token, training would fail or learn the wrong thing: a ValueError
    pointing to :class:`ObliqueMatryoshkaLoss`. Around another loss at whole-token dimensions (e.g.
    ``MultipleNegativesRankingLoss`` with cosine similarity, which the global renormalization does not change) it is
    only a warning.

    Args:
        losses: the losses of a trainer (a list, as ``get_losses`` returns, wrappers included).
        model: the model being trained; nothing happens for a model that is not oblique.
    """
    shape = oblique_shape(model)
    if shape is None:
        return
    losses = list(losses)
    for loss in losses:
        if not isinstance(loss, MatryoshkaLoss):
            continue
        dims = list(loss.matryoshka_dims)
        inside = [dim for dim in dims if dim % shape.token_dim]
        inner = loss.loss
        hint = (
            f"Use st_oblique.ObliqueMatryoshkaLoss(model, loss, token_counts={[max(1, dim // shape.token_dim) for dim in dims]}) "
            "instead: it cuts between whole tokens and never renormalizes."
        )
        problem = (
            f"sentence_transformers' {type(loss).__name__} renormalizes every truncated embedding globally, which "
            f"shrinks the tokens of this oblique model (K={shape.num_tokens} unit tokens of d={shape.token_dim}) to "
            "norm 1/sqrt(k) and divides the oblique similarity by k"
        )
        if inside:
            raise ValueError(
                f"{problem}; matryoshka_dims {inside} also cut inside a token (not multiples of d={shape.token_dim}). "
                + hint
            )
        if isinstance(inner, ObliqueLoss):
            raise ValueError(f"{problem}, so {type(inner).__name__} would refuse the embeddings. " + hint)
        logger.warning(f"{problem}; {type(inner).__name__} sees globally renormalized prefixes. " + hint)
