"""What every st-oblique loss shares: the oblique shape of the model, input checks, gathering, the model's logit scale."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from sentence_transformers.util import all_gather_with_grad, get_rank, get_world_size
from torch import Tensor, nn

from st_oblique import manifold
from st_oblique.citations import SPARO_CITATION
from st_oblique.modules.logit_scale import KEEP, LogitScale
from st_oblique.modules.shape import model_temperature, oblique_shape

logger = logging.getLogger(__name__)

Reduction = Literal["sum", "mean"]
REDUCTIONS: tuple[str, ...] = ("sum", "mean")

"""Sparo (Vani et al., ECCV 2024, arXiv 2404.15721), whose similarity is the mean of the slot cosines: cited by the
losses with ``reduction="mean"``, next to their own citation."""

LOW_PRECISION_ATOL = 1e-2
"""Tolerance on per-token norms for float16/bfloat16 embeddings (bfloat16 keeps 8 bits of mantissa)."""


class ObliqueLoss(nn.Module):
    """Base class of st-oblique's losses (not a loss itself).

    It finds K and d in the model's :class:`~st_oblique.ObliquePooling`, validates the embeddings of every step
    (sizes, per-token unit norm, finiteness) with one device synchronization, gathers them across processes, and
    reads the logit scale from the model. The losses hold no state of their own: the scale (and a sigmoid loss's
    bias) is the model's :class:`~st_oblique.modules.logit_scale.LogitScale` (``model[-1].temperature``), so it is
    trained, saved, resumed and synchronised across processes with the model's weights by any trainer.

    Args:
        model: the oblique SentenceTransformer being trained (it must contain an ObliquePooling).
        scale: set the model's logit scale (inverse temperature), or its initial value when learnable; None keeps
            the model's (1 for a new model: the paper's raw sums of cosines).
        learnable_scale: set whether the model learns its scale (in log space, like CLIP); None keeps the model's.
        max_scale: set the cap of a learnable scale (None: no cap); by default the model's (100, open_clip's, for a
            new model; the paper caps its oblique model at 3.95).
        gather_across_devices: all-gather the embeddings of every process (with gradients) before the loss.
        reduction: how the K per-token cosines make the similarity that the scale multiplies: ``"sum"`` (the
            paper's oblique similarity, in ``[-K, K]``; the model scores with ``"dot"``) or ``"mean"`` (Sparo's
            ``(1/K) sum_k cos``, in ``[-1, 1]`` like CLIP's cosine, so CLIP's temperature init and cap apply; the
            model scores with ``"cosine"``, which on unit tokens is exactly that mean).
    """

    def __init__(
        self,
        model: nn.Module,
        scale: float | None = None,
        learnable_scale: bool | None = None,
        max_scale: Any = KEEP,
        gather_across_devices: bool = False,
        reduction: Reduction = "sum",
    ) -> None:
        super().__init__()
        self.model = model
        shape = oblique_shape(model, required_by=type(self).__name__)
        self.num_tokens, self.token_dim = shape.num_tokens, shape.token_dim
        # Not a submodule: the scale is the model's, saved and optimised with it (and never twice in this loss).
        self.__dict__["_temperature"] = model_temperature(model)
        self.logit_scale.configure(value=scale, learnable=learnable_scale, max_value=max_scale)
        self.gather_across_devices = bool(gather_across_devices)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
        self.reduction = reduction

    @property
    def logit_scale(self) -> LogitScale:
        """The model's :class:`~st_oblique.modules.logit_scale.LogitScale` (its first ObliquePooling's ``temperature``)."""
        return self.__dict__["_temperature"]

    def similarity_scale(self) -> Tensor | float:
        """The multiplier on the flat dot product (the sum of K cosines): ``scale``, or ``scale / K`` for
        ``reduction="mean"``; a 0-d tensor in the autograd graph when the scale is learnable."""
        return self.scale_from(self.logit_scale())

    def with_reduction_citation(self, citation: str) -> str:
        """``citation``, followed by Sparo's for ``reduction="mean"`` (Sparo's similarity, the mean of the cosines)."""
        return f"{citation}\n\n{SPARO_CITATION}" if self.reduction == "mean" else citation

    def scale_from(self, scale: Tensor | float) -> Tensor | float:
        """``scale`` as the multiplier on the flat dot product (divided by K for ``reduction="mean"``), times
        :attr:`prefix_logit_factor`."""
        scale = scale / self.num_tokens if self.reduction == "mean" else scale
        return scale if self.prefix_logit_factor == 1.0 else scale * self.prefix_logit_factor

    prefix_logit_factor: float = 1.0
    """An extra multiplier on the logits, 1 except while :meth:`at_token_prefix` is active."""

    @contextmanager
    def at_token_prefix(self, keep_tokens: int, logit_factor: float = 1.0) -> Iterator[None]:
        """While active, this loss takes the first ``keep_tokens`` tokens as its embeddings (``(B, keep_tokens*d)``
        columns, checked like full ones) and multiplies its logits by ``logit_factor``; used by
        :class:`~st_oblique.ObliqueMatryoshkaLoss` to evaluate a loss at nested token prefixes.
        """
        saved = self.num_tokens, self.prefix_logit_factor
        if not 1 <= keep_tokens <= saved[0]:
            raise ValueError(f"keep_tokens must be between 1 and K={saved[0]}, got {keep_tokens}.")
        self.num_tokens, self.prefix_logit_factor = keep_tokens, float(logit_factor)
        try:
            yield
        finally:
            self.num_tokens, self.prefix_logit_factor = saved

    @property
    def scale(self) -> float:
        """The model's current logit scale (inverse temperature), to the 7 significant digits of its float32 value."""
        return self.logit_scale.value

    @property
    def temperature(self) -> float:
        """``1 / scale``."""
        return 1.0 / self.scale

    @property
    def learnable_scale(self) -> bool:
        return self.logit_scale.learnable

    @property
    def max_scale(self) -> float | None:
        return self.logit_scale.max_value

    def temperature_parameters(self) -> dict[str, nn.Parameter]:
        """The model's learnable temperature scalars (``{"logit_scale": ...}``, plus ``"logit_bias"`` for a learned
        sigmoid bias), which get no weight decay and are logged."""
        return self.logit_scale.learnable_parameters()

    def check_embeddings(self, embeddings: Sequence[Tensor | Sequence[Tensor]]) -> None:
        """Raise a ValueError that says what is wrong unless every column holds ``(B, K*d)`` oblique embeddings.

        A column is one ``(B, K*d)`` tensor or, as GradCache caches it, the list of its mini-batch tensors
        ``(B_m, K*d)`` (checked block by block, never concatenated). Sizes are checked on the host; the per-token
        norms (which also catch NaN/inf) are checked with a single device synchronization, and only a failure pays
        for the detailed diagnosis of :func:`st_oblique.manifold.assert_on_manifold`.
        """
        loss_name = type(self).__name__
        if len(embeddings) < 2:
            raise ValueError(
                f"{loss_name} needs at least two input columns (anchor, positive[, negatives...]), got {len(embeddings)}."
            )
        columns = [[column] if isinstance(column, Tensor) else list(column) for column in embeddings]
        expected = self.num_tokens * self.token_dim
        for index, blocks in enumerate(columns):
            for block in blocks:
                if block.ndim != 2 or block.shape[1] != expected:
                    shape = tuple(block.shape) if len(blocks) == 1 else f"(..., {block.shape[-1]}) in a mini-batch"
                    raise ValueError(
                        f"The {column_name(index)} embeddings have shape {shape}, but the model's "
                        f"ObliquePooling gives (batch, K*d) = (batch, {self.num_tokens}*{self.token_dim}). Every column "
                        "must be embedded by the same oblique model (same K and d, no truncate_dim that is not a "
                        "multiple of d)."
                    )
        batch_sizes = [sum(len(block) for block in blocks) for blocks in columns]
        if len(set(batch_sizes)) > 1:
            raise ValueError(f"All columns must have the same number of rows, got {batch_sizes} per column.")
        if batch_sizes[0] == 0:
            raise ValueError(f"{loss_name} received an empty batch.")
        blocks = [block for column in columns for block in column]
        low_precision = any(block.dtype in (torch.float16, torch.bfloat16) for block in blocks)
        atol = LOW_PRECISION_ATOL if low_precision else manifold.DEFAULT_ATOL
        norms = torch.cat([manifold.token_norms(block.detach().float(), self.num_tokens) for block in blocks])
        # NaN and inf norms fail this comparison too.
        if bool(((norms - 1).abs() <= atol).all()):
            return
        for index, column in enumerate(columns):
            embedding = torch.cat([block.detach() for block in column])
            manifold.assert_on_manifold(embedding, self.num_tokens, atol=atol, name=f"{column_name(index)} embedding")

    def gather(self, columns: Sequence[Tensor]) -> tuple[list[Tensor], int]:
        """All-gather every column across processes with gradients when ``gather_across_devices`` is set.

        Returns:
            The (possibly gathered) columns, each ``(B * world_size, K*d)``, and the offset of this process's rows.
        """
        if not self.gather_across_devices:
            return list(columns), 0
        return [all_gather_with_grad(column) for column in columns], get_rank() * columns[0].shape[0]

    def global_batch_size(self, local_batch_size: int) -> int:
        return local_batch_size * (get_world_size() if self.gather_across_devices else 1)

    def base_config(self) -> dict:
        return {
            "scale": self.scale,
            "learnable_scale": self.learnable_scale,
            "max_scale": self.max_scale,
            "gather_across_devices": self.gather_across_devices,
            "reduction": self.reduction,
        }


def column_name(index: int) -> str:
    return ("anchor", "positive")[index] if index < 2 else f"negative_{index - 1}"


__all__ = ["ObliqueLoss", "column_name"]
