"""ScaleGradientReplay: the gradient of the model's learnable logit scale through GradCache's replay.

GradCache (Sentence Transformers' ``CachedLossMixin``) computes the loss on embeddings made without gradients, then,
in the outer backward pass, replays every mini-batch's forward pass with gradients and back-propagates the cached
embedding gradients through it. The closed-form loss step also yields ``d loss / d log(scale)``. The scale is a
parameter of the model, so under DDP its gradient must arrive in those replayed backward passes like every other
parameter's (DDP synchronizes after the last one and counts the scale as used: the model's training outputs carry
it, see :class:`~st_oblique.ObliquePooling`); a separate term on the returned loss would reach it too late.

So each replayed mini-batch carries a share of the scale's gradient: its embeddings become
``reps + (s - s.detach()) * v`` with ``s`` the model's scale (a 0-d tensor in the graph) and ``v`` chosen so that
``<v, g_mb> = share / s`` for the mini-batch's cached gradient ``g_mb``. The value is unchanged; GradCache's surrogate
``<reps, g_mb> * grad_output`` then gives the scale ``share * grad_output``: the outer factor (gradient accumulation,
AMP's loss scale) reaches it exactly as it reaches the model's parameters.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from st_oblique.modules.shape import model_temperature

__all__ = ["ScaleGradientReplay"]

logger = logging.getLogger(__name__)


class ScaleGradientReplay:
    """Mixin for st-oblique losses built on ``CachedLossMixin`` (before it in the bases): call
    :meth:`start_scale_replay` at the end of ``calculate_loss(..., with_backward=True)``."""

    _scale_replay: dict[str, Any] | None = None

    def start_scale_replay(self, reps: list[list[Tensor]], log_scale_grad: Tensor | float | None) -> None:
        """Remember the cached gradients of ``reps`` (``[column][mini_batch]``, in replay order) and the scale's
        gradient ``d loss / d log(scale)`` (None for a fixed scale) for the replay of this batch."""
        if log_scale_grad is None:
            self._scale_replay = None
            return
        grads = [rep.grad for column in reps for rep in column]
        self._scale_replay = {"grads": grads, "remaining": torch.as_tensor(log_scale_grad).detach(), "next": 0}

    def embed_minibatch(
        self,
        sentence_feature: dict[str, Tensor],
        begin: int,
        end: int,
        with_grad: bool,
        copy_random_state: bool,
        random_state: Any = None,
    ) -> tuple[Tensor, Any]:
        """``CachedLossMixin.embed_minibatch``; in the replay, the embeddings also carry a share of the scale's
        gradient (see the module docstring)."""
        replay = self._scale_replay
        if not with_grad or replay is None:
            return super().embed_minibatch(sentence_feature, begin, end, with_grad, copy_random_state, random_state)
        reps, random_state = super().embed_minibatch(
            sentence_feature, begin, end, with_grad, copy_random_state, random_state
        )
        index, grads = replay["next"], replay["grads"]
        replay["next"] += 1
        if index >= len(grads) or not reps.requires_grad:
            return reps, random_state
        share = replay["remaining"] / (len(grads) - index)  # equal shares; a share that cannot be carried moves on
        cached = grads[index].to(reps.dtype)
        norm = (cached * cached).sum()
        scale = model_temperature(self.model)()
        if not bool(norm > 0):
            if index == len(grads) - 1:
                logger.warning("The last mini-batch's cached gradient is 0: the logit scale's gradient of this step is lost.")
            return reps, random_state
        replay["remaining"] = replay["remaining"] - share
        carrier = cached * (share.to(reps.dtype) / (scale.detach().to(reps.dtype) * norm))
        return reps + (scale - scale.detach()).to(reps.dtype) * carrier, random_state
