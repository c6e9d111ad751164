"""CachedObliqueContrastiveLoss: ObliqueContrastiveLoss with GradCache, for batches larger than memory allows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin, has_static_embedding_input
from torch import Tensor, nn

from st_oblique.losses.base import Reduction
from st_oblique.losses.contrastive import DIRECTIONS, Direction, ObliqueContrastiveLoss, info_nce_row_losses
from st_oblique.losses.scale import OPEN_CLIP_MAX_SCALE, average_gradient_across_ranks

GRADCACHE_CITATION = """@misc{gao2021scaling,
    title={Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup},
    author={Luyu Gao and Yunyi Zhang and Jiawei Han and Jamie Callan},
    year={2021},
    eprint={2101.06983},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}"""


class CachedObliqueContrastiveLoss(CachedLossMixin, ObliqueContrastiveLoss):
    """:class:`ObliqueContrastiveLoss` with gradient caching (GradCache, Gao et al. 2021), on ST's ``CachedLossMixin``.

    The batch is embedded ``mini_batch_size`` rows at a time without gradients, the loss (also computed in chunks
    of ``mini_batch_size`` rows) is back-propagated to the embeddings, and each mini-batch is embedded again with
    gradients to push the cached embedding gradients into the model. Peak activation memory is that of one
    mini-batch, whatever the batch size, for about twice the forward compute. Loss and gradients equal the
    uncached loss (with dropout, up to its random masks).

    A learnable scale gets the same gradient as in the uncached loss, including the outer backward factor
    (gradient accumulation's 1/N, AMP's loss scale): its gradient is computed with the embedding gradients and
    re-attached to the returned loss, so the outer backward multiplies it like the model's gradients. (Computing it
    inside GradCache's loss step alone would ignore that factor.)

    Args:
        model: the oblique SentenceTransformer being trained.
        scale, learnable_scale, max_scale, directions, gather_across_devices, reduction: as in
            :class:`ObliqueContrastiveLoss`.
        mini_batch_size: rows per embedding mini-batch and per loss chunk; bounds the memory. Default 32.
        mini_batch_num_tokens: pack embedding mini-batches by non-padding token count instead (see ST's
            ``CachedMultipleNegativesRankingLoss``).
        show_progress_bar: show progress over the mini-batches.

    Example::

        loss = st_oblique.CachedObliqueContrastiveLoss(model, mini_batch_size=64)
        args = SentenceTransformerTrainingArguments(output_dir="out", per_device_train_batch_size=4096)
        SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss).train()
    """

    def __init__(
        self,
        model: nn.Module,
        scale: float = 1.0,
        learnable_scale: bool = False,
        max_scale: float | None = OPEN_CLIP_MAX_SCALE,
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
        if not isinstance(mini_batch_size, int) or mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be a positive integer, got {mini_batch_size!r}.")
        if mini_batch_num_tokens is not None and (
            not isinstance(mini_batch_num_tokens, int) or isinstance(mini_batch_num_tokens, bool) or mini_batch_num_tokens < 1
        ):
            raise ValueError(f"mini_batch_num_tokens must be a positive integer or None, got {mini_batch_num_tokens!r}.")
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
        log_scale_grad, self._log_scale_grad = self._log_scale_grad, None
        if log_scale_grad is None:
            return loss
        # d loss / d log_scale was computed inside forward_cached; this term is 0 but routes the outer backward's
        # factor to the scale exactly as GradCache's hook routes it to the model.
        log_value = self.logit_scale.log_scale_bias
        return loss + (average_gradient_across_ranks(log_value) - log_value.detach()) * log_scale_grad

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        """The loss of the mini-batch embeddings ``reps[column][mini_batch]``, chunked over ``mini_batch_size`` rows.

        With ``with_backward``, back-propagates it to ``reps`` (and keeps the scale's gradient for ``forward``) and
        returns the detached total.
        """
        embeddings = [column[0] if len(column) == 1 else torch.cat(column) for column in reps]
        self.check_embeddings(embeddings)
        self.warn_if_no_negatives(embeddings)
        batch_size = embeddings[0].shape[0]
        # With backward, the scale is a detached leaf whose gradient forward() re-attaches (see there).
        log_leaf = None
        if with_backward and self.logit_scale.learnable:
            log_leaf = self.logit_scale.log_scale_bias.detach().requires_grad_()
        else:
            scale = self.similarity_scale()
        columns, offset = self.gather(embeddings)
        gathered = any(column is not embedding for column, embedding in zip(columns, embeddings, strict=True))
        # Chunks back-propagate into detached copies; one final backward carries their gradients through the
        # gather (one collective per column, not one per chunk) and the concatenation to the mini-batch embeddings.
        leaves = [column.detach().requires_grad_() for column in columns] if with_backward else columns
        # One candidate column (pairs) is used as it is: a concatenation would copy (B, K*d) and its gradient.
        anchors, candidates = leaves[0], leaves[1] if len(leaves) == 2 else torch.cat(leaves[1:])
        chunks = []
        for begin in range(0, batch_size, self.mini_batch_size):
            rows = torch.arange(offset + begin, offset + min(begin + self.mini_batch_size, batch_size), device=anchors.device)
            if log_leaf is not None:
                scale = self.scale_from(log_leaf.exp())  # per chunk: each chunk's backward frees its graph
            chunk = info_nce_row_losses(anchors, candidates, rows, scale, self.directions).sum() / batch_size
            if with_backward:
                chunk.backward()
                chunk = chunk.detach()
            chunks.append(chunk)
        if with_backward:
            if gathered:
                torch.autograd.backward(columns, [leaf.grad for leaf in leaves])
            else:
                # One process: a column's gradient is its leaf's, and each mini-batch's is a slice of it. Views of
                # the slices, rather than a backward through the concatenation, which would allocate every
                # gradient a second time (2 x (B, K*d) per column at the peak).
                for column_reps, leaf in zip(reps, leaves, strict=True):
                    for rep, gradient in zip(column_reps, leaf.grad.split([len(rep) for rep in column_reps]), strict=True):
                        rep.grad = gradient if rep.grad is None else rep.grad + gradient
            self._log_scale_grad = None if log_leaf is None else log_leaf.grad
        return torch.stack(chunks).sum()

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
