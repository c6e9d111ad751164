"""The logit scale (inverse temperature) of st-oblique losses: fixed, or learnable in log space with a cap."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from sentence_transformers.util import get_world_size
from torch import Tensor, nn

OPEN_CLIP_MAX_SCALE = 100.0
"""open_clip's cap on CLIP's learnable scale (``logit_scale.clamp_(0, ln 100)`` in its training loop)."""

PAPER_MAX_SCALE = 3.95
"""The cap on the oblique model's learnable scale in the paper's appendix (vs 100 for its sphere baseline)."""


class LogitScale(nn.Module):
    """A positive multiplier on similarities: ``logits = scale * s``, with ``scale = 1 / temperature``.

    Fixed (a plain float, no parameter) or learnable, stored as its logarithm ``log_scale_bias`` (CLIP's
    parameterization: the optimizer works on log-scale, the scale stays positive). In log space the scale is an
    additive bias of the logits' logarithm, ``log(scale * s) = log(s) + log_scale_bias``; the name carries
    ``bias`` on purpose: both of Sentence Transformers' optimizer groupings (the trainer's, through transformers'
    ``get_decay_parameter_names``, and ``model.fit``'s ``no_decay`` list) leave parameters named ``*bias*`` out of
    weight decay, so a learnable scale is never pulled towards 1, whatever trainer builds the optimizer (checked
    by a canary test, see :mod:`st_oblique._compat`). A learnable scale is capped at ``max_value`` the way
    open_clip's training loop caps CLIP's: the parameter itself is clamped in place (here before every use, there
    after every optimizer step), so it can come back down from the cap. Clamping inside the graph instead would
    zero its gradient above the cap and leave it stuck there.

    Under ``torch.distributed``, the gradient of ``log_scale_bias`` is averaged over the ranks in the backward pass:
    the scale is a loss parameter, outside the model that DDP wraps, so nothing else keeps it identical on
    every rank.

    Args:
        value: the scale, or its initial value when learnable. Must be positive.
        learnable: whether ``log_scale_bias`` is an ``nn.Parameter``.
        max_value: the cap of a learnable scale (None: no cap). Ignored when fixed.

    Example::

        scale = LogitScale(1.0, learnable=True, max_value=100.0)
        logits = scale() * anchors @ candidates.T      # scale() is a 0-d tensor in the autograd graph
        print(float(scale))                            # its current value
    """

    def __init__(self, value: float, learnable: bool = False, max_value: float | None = OPEN_CLIP_MAX_SCALE) -> None:
        super().__init__()
        value = _positive_float("scale", value)
        self.learnable = bool(learnable)
        self.max_value = None if max_value is None else _positive_float("max_scale", max_value)
        if self.learnable and self.max_value is not None and value > self.max_value:
            raise ValueError(f"The initial scale {value} is above max_scale={self.max_value}; lower it or raise the cap.")
        if self.learnable:
            self.log_scale_bias = nn.Parameter(torch.tensor(math.log(value)))
        else:
            self.value = value

    def forward(self) -> Tensor | float:
        """The scale: a 0-d tensor in the autograd graph when learnable, else the float."""
        if not self.learnable:
            return self.value
        self.apply_cap()
        return average_gradient_across_ranks(self.log_scale_bias).exp()

    def apply_cap(self) -> None:
        """Clamp the learnable ``log_scale_bias`` to ``log(max_value)`` in place (open_clip's clamp)."""
        if self.learnable and self.max_value is not None:
            with torch.no_grad():
                self.log_scale_bias.clamp_(max=math.log(self.max_value))

    def __float__(self) -> float:
        return math.exp(self.log_scale_bias.item()) if self.learnable else self.value

    def extra_repr(self) -> str:
        return f"value={float(self):.4g}, learnable={self.learnable}, max_value={self.max_value}"


class _AverageGradientAcrossRanks(torch.autograd.Function):
    """Identity in the forward pass; all-reduces (averages) the gradient over the ranks in the backward pass."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad / dist.get_world_size()


def average_gradient_across_ranks(tensor: Tensor) -> Tensor:
    """``tensor`` unchanged, but its gradient becomes the mean over the distributed ranks.

    With DDP every rank's loss covers its own rows, and DDP averages the model gradients; a loss parameter gets
    the same average here, i.e. the gradient of the mean loss, which is also what a single process computing the
    whole (gathered) batch would give. Outside ``torch.distributed`` (or with one process) this is a no-op.
    """
    if torch.is_grad_enabled() and tensor.requires_grad and get_world_size() > 1:
        return _AverageGradientAcrossRanks.apply(tensor)
    return tensor


def _positive_float(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}.") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return value
