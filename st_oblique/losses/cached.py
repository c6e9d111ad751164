"""CachedObliqueContrastiveLoss: ObliqueContrastiveLoss with GradCache, for batches larger than memory allows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin, has_static_embedding_input
from torch import Tensor, nn

from st_oblique.citations import GRADCACHE_CITATION
from st_oblique.losses.base import Reduction
from st_oblique.losses.contrastive import DIRECTIONS, Direction, ObliqueContrastiveLoss
from st_oblique.losses.info_nce_gradient import BlockedColumn, info_nce_direction
from st_oblique.losses.scale_gradient_replay import ScaleGradientReplay
from st_oblique.modules.logit_scale import KEEP
from st_oblique.validators import check_positive_int


class CachedObliqueContrastiveLoss(ScaleGradientReplay, CachedLossMixin, ObliqueContrastiveLoss):
    """:class:`ObliqueContrastiveLoss` with gradient caching (GradCache, Gao et al. 2021), on ST's ``CachedLossMixin``.

    The batch is embedded ``mini_batch_size`` rows at a time without gradients, the loss and its closed-form
    gradient with respect to the embeddings are computed in chunks of ``mini_batch_size`` rows (never the whole
    ``(B, B)`` score matrix; see :mod:`st_oblique.losses.info_nce_gradient`), and each mini-batch is embedded again
    with gradients to push the cached embedding gradients into the model. Peak activation memory is that of one
    mini-batch, whatever the batch size, for about twice the forward compute; what grows with B is the cached
    embeddings and their gradients (``2 x B x K*d`` values per column) and one ``(mini_batch_size, B)`` chunk. Loss and gradients equal the
    uncached loss (with dropout, up to its random masks).

    A learnable scale (the model's, see :class:`ObliqueContrastiveLoss`) gets the same gradient as in the uncached
    loss, including the outer backward factor (gradient accumulation's 1/N, AMP's loss scale): its gradient is
    computed with the embedding gradients and carried by the replayed mini-batches into the outer backward pass, like
    the model's gradients (see :mod:`st_oblique.losses.scale_gradient_replay`), so DDP synchronizes it with them.

    Args:
        model: the oblique SentenceTransformer being trained.
        scale, learnable_scale, max_scale, directions, gather_across_devices, reduction: as in
            :class:`ObliqueContrastiveLoss`.
        mini_batch_size: rows per embedding mini-batch and per loss chunk; bounds the memory. Default 32.
        mini_batch_num_tokens: pack embedding mini-batches by non-padding token count instead (see ST's
            ``CachedMultipleNegativesRankingLoss``).
        show_progress_bar: show progress over the mini-batches.

    Requirements:
        1. An oblique model whose inputs can be split into mini-batches (not a ``StaticEmbedding`` model).
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
        - Equal to :class:`ObliqueContrastiveLoss` (loss and gradients; the tests check it in float64), with memory
          bounded by ``mini_batch_size`` for about twice the forward compute: the paper's batch of 32,768 fits one
          machine. As ST's ``CachedMultipleNegativesRankingLoss`` is to ``MultipleNegativesRankingLoss``.

    Example::

        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        import st_oblique

        model = st_oblique.oblique_text_model("sentence-transformers/all-MiniLM-L6-v2", num_tokens=16, token_dim=32)
        train = Dataset.from_dict({
            "anchor": [f"Sentence number {i}." for i in range(64)],
            "positive": [f"The sentence numbered {i}." for i in range(64)],
        })
        loss = st_oblique.CachedObliqueContrastiveLoss(model, mini_batch_size=16)
        args = SentenceTransformerTrainingArguments(output_dir="out", per_device_train_batch_size=64)
        SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss).train()
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
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        show_progress_bar: bool = False,
    ) -> None:
        super().__init__(model, scale, learnable_scale, max_scale, directions, gather_across_devices, reduction)
        if has_static_embedding_input(model):
            raise ValueError(
                "CachedObliqueContrastiveLoss cannot split the inputs of a StaticEmbedding model into mini-batches; "
                "use ObliqueContrastiveLoss."
            )
        check_positive_int(mini_batch_size, name="mini_batch_size")
        if mini_batch_num_tokens is not None:
            check_positive_int(mini_batch_num_tokens, name="mini_batch_num_tokens")
        self.mini_batch_size = mini_batch_size
        self.mini_batch_num_tokens = mini_batch_num_tokens
        self.show_progress_bar = show_progress_bar
        self._log_scale_grad: Tensor | None = None

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        sentence_features = list(sentence_features)
        if len(sentence_features) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two input columns, got {len(sentence_features)}.")
        self.logit_scale.apply_cap()
        loss = self.forward_cached(sentence_features, labels)
        self._log_scale_grad = None  # read by a wrapping ObliqueMatryoshkaLoss inside forward_cached only
        return loss

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        """The loss of the mini-batch embeddings ``reps[column][mini_batch]`` (``(B_m, K*d)`` each), over chunks of
        ``mini_batch_size`` rows.

        The embeddings are used as the mini-batch tensors they are (no concatenated copy). With ``with_backward``,
        the closed-form gradient of each chunk (:mod:`st_oblique.losses.info_nce_gradient`) is accumulated in
        place into one buffer per mini-batch tensor, which becomes its ``.grad``; the scale's gradient is kept for
        :meth:`forward`. Returns the (detached) loss.
        """
        self.check_embeddings(reps)
        batch_size = sum(len(rep) for rep in reps[0])
        self.warn_if_no_negatives(len(reps), batch_size)
        if self.gather_across_devices:
            # One collective per column (with gradients) on its concatenation; the chunks' gradients reach the
            # mini-batch embeddings through one backward of the gather at the end.
            gathered, offset = self.gather([column[0] if len(column) == 1 else torch.cat(column) for column in reps])
            columns = [[column] for column in gathered]
        else:
            gathered, offset, columns = None, 0, reps
        anchors = BlockedColumn(columns[0], with_gradient=with_backward)
        # The positives first, then each negative column: candidate i is the positive of anchor i.
        candidates = BlockedColumn([block for column in columns[1:] for block in column], with_gradient=with_backward)
        scale = float(self.scale_from(float(self.logit_scale)))
        weight = 1.0 / (batch_size * len(self.directions))
        loss, scale_gradient = 0.0, 0.0
        for begin in range(offset, offset + batch_size, self.mini_batch_size):
            end = min(begin + self.mini_batch_size, offset + batch_size)
            terms = [info_nce_direction(anchors, candidates, begin, end, scale, weight, with_gradient=with_backward)]
            if "doc_to_query" in self.directions:
                terms.append(info_nce_direction(candidates, anchors, begin, end, scale, weight, with_gradient=with_backward))
            for term, term_scale_gradient in terms:
                loss = loss + term
                if with_backward:
                    scale_gradient = scale_gradient + term_scale_gradient
        if with_backward:
            gradients = anchors.gradients + candidates.gradients  # one per block of ``columns``, in order
            if gathered is not None:
                torch.autograd.backward(gathered, gradients)
            else:
                for rep, gradient in zip((rep for column in reps for rep in column), gradients, strict=True):
                    rep.grad = gradient if rep.grad is None else rep.grad + gradient
            self._log_scale_grad = scale_gradient.reshape(()) if self.logit_scale.learnable else None
            self.start_scale_replay(reps, self._log_scale_grad)
        return loss.detach()

    def get_config_dict(self) -> dict[str, Any]:
        return {
            **super().get_config_dict(),
            "mini_batch_size": self.mini_batch_size,
            "mini_batch_num_tokens": self.mini_batch_num_tokens,
        }

    @property
    def citation(self) -> str:
        # What this loss adds, as ST's CachedMultipleNegativesRankingLoss does; the model card of an oblique model
        # (ObliqueModelCardData) always cites the paper.
        return self.with_reduction_citation(GRADCACHE_CITATION)
