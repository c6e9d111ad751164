"""LogitScale: the temperature of an oblique model — the logit scale (and SigLIP's bias) its losses train with."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["KEEP", "OPEN_CLIP_MAX_SCALE", "PAPER_MAX_SCALE", "LogitScale"]

KEEP: Any = object()
"""Default of :meth:`LogitScale.configure`'s ``max_value``: keep the current cap (None means "no cap")."""

OPEN_CLIP_MAX_SCALE = 100.0
"""open_clip's cap on CLIP's learnable scale (``logit_scale.clamp_(0, ln 100)`` in its training loop)."""

PAPER_MAX_SCALE = 3.95
"""The cap on the oblique model's learnable scale in the paper's appendix (vs 100 for its sphere baseline)."""


class LogitScale(nn.Module):
    """The multiplier on an oblique similarity, ``logits = scale * s (+ bias)``, with ``scale = 1 / temperature``.

    It lives in the model (as ``ObliquePooling.temperature``), as open_clip keeps ``logit_scale`` on its CLIP model
    and hands it to a stateless loss: the losses read it, so it is saved and loaded with the model's weights,
    restored with the model when training resumes from a checkpoint, and all-reduced by DDP like every other
    parameter of the model.

    The scale is stored as its logarithm, ``log_scale_bias`` (CLIP's parameterization: the optimizer works on
    log-scale, the scale stays positive); fixed values are buffers, learnable ones parameters. SigLIP's loss adds a
    logit bias, ``logit_bias``, absent (None) until a sigmoid loss asks for one.

    **No weight decay.** Both parameter names contain ``bias``: transformers' ``Trainer.get_decay_parameter_names``
    documents that it leaves such parameters out of weight decay, and Sentence Transformers' trainer and
    ``model.fit`` build their optimizer groups with it, so a learned scale is never pulled towards 1 (in log space,
    the scale is indeed an additive bias of the logits' logarithm, ``log(scale * s) = log(s) + log_scale_bias``).
    :class:`~st_oblique.ObliqueTrainer` does not rely on the name: it excludes these parameters by identity.

    **The cap.** A learnable scale is capped at ``max_value`` the way open_clip's training loop caps CLIP's: the
    parameter itself is clamped in place (here before every use, there after every optimizer step), so it can come
    back down from the cap. Clamping inside the graph instead would zero its gradient above the cap and leave it
    stuck there.

    Args:
        value: the scale, or its initial value when learnable. Must be positive.
        learnable: learn the scale.
        max_value: the cap of a learnable scale (None: no cap; ignored when fixed).
        bias: the logit bias of a sigmoid loss, or None for none.
        learnable_bias: learn the bias.

    Relations:
        :class:`~st_oblique.ObliquePooling` owns one (``pooling.temperature``; ``pooling.logit_scale`` and
        ``pooling.logit_bias`` are its values); every st-oblique loss reads the one of the model it trains and, given
        explicit ``scale``/``learnable_scale``/``max_scale`` (and ``bias``/``learnable_bias``) arguments, sets it
        up with :meth:`configure` when it is built.

    Example::

        from st_oblique.modules.logit_scale import LogitScale

        temperature = LogitScale(1.0, learnable=True, max_value=3.95)
        logits = temperature() * anchors @ candidates.T     # a 0-d tensor in the autograd graph
        print(float(temperature), temperature.learnable)     # 1.0 True
    """

    def __init__(
        self,
        value: float = 1.0,
        learnable: bool = False,
        max_value: float | None = OPEN_CLIP_MAX_SCALE,
        bias: float | None = None,
        learnable_bias: bool = False,
    ) -> None:
        super().__init__()
        self.learnable = False
        self.max_value: float | None = None
        self.learnable_bias = False
        self.fixed_value = 1.0
        self.register_buffer("log_scale_bias", torch.zeros(()))
        # A loaded fixed scale must reach ``fixed_value`` too (the buffer holds its logarithm).
        self.register_load_state_dict_post_hook(lambda module, _: module._refresh_fixed_value())
        self.configure(value=value, learnable=learnable, max_value=max_value)
        self.configure_bias(bias, learnable=learnable_bias)

    def configure(self, value: float | None = None, learnable: bool | None = None, max_value: Any = KEEP) -> None:
        """Set the scale, whether it is learned and its cap; an argument left at its default keeps the current setting.

        Raises:
            ValueError: a scale or cap that is not a positive finite number, or an initial learnable scale above the cap.
        """
        value = self.value if value is None else positive_float("scale", value)
        learnable = self.learnable if learnable is None else bool(learnable)
        if max_value is not KEEP:
            self.max_value = None if max_value is None else positive_float("max_scale", max_value)
        if learnable and self.max_value is not None and value > self.max_value * (1 + 1e-6):
            raise ValueError(f"The initial scale {value} is above max_scale={self.max_value}; lower it or raise the cap.")
        self._set_tensor("log_scale_bias", math.log(value), learnable)
        self.learnable = learnable
        self.fixed_value = value

    def configure_bias(self, value: float | None, learnable: bool | None = None) -> None:
        """Set the logit bias (None removes it) and whether it is learned (None keeps the current setting).

        Raises:
            ValueError: a bias that is not a finite number.
        """
        learnable = self.learnable_bias if learnable is None else bool(learnable)
        if value is None:
            if "logit_bias" in self._parameters or "logit_bias" in self._buffers:
                delattr(self, "logit_bias")
            self.learnable_bias = False
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"bias must be a finite number, got {value!r}.")
        self._set_tensor("logit_bias", float(value), learnable)
        self.learnable_bias = learnable

    def forward(self) -> Tensor | float:
        """The scale: a 0-d tensor in the autograd graph when learnable (the cap applied first), else the exact float
        it was set to (so a fixed scale multiplies float64 embeddings without a float32 round trip)."""
        if not self.learnable:
            return self.fixed_value
        self.apply_cap()
        return self.log_scale_bias.exp()

    def bias_tensor(self) -> Tensor | None:
        """The logit bias as a 0-d tensor (in the autograd graph when learnable), or None."""
        return getattr(self, "logit_bias", None)

    def apply_cap(self) -> None:
        """Clamp a learnable scale to ``max_value`` in place (open_clip's clamp)."""
        if self.learnable and self.max_value is not None:
            with torch.no_grad():
                self.log_scale_bias.clamp_(max=math.log(self.max_value))

    @property
    def value(self) -> float:
        """The current scale (a learned one to the 7 significant digits of its float32 parameter)."""
        if not self.learnable:
            return self.fixed_value
        return round_float32(math.exp(self.log_scale_bias.item()))

    @property
    def bias(self) -> float | None:
        """The current logit bias, or None."""
        bias = self.bias_tensor()
        return None if bias is None else round_float32(bias.item())

    def learnable_parameters(self) -> dict[str, nn.Parameter]:
        """``{"logit_scale": ..., "logit_bias": ...}``: the learnable ones only (they get no weight decay; logged)."""
        found = {"logit_scale": self.log_scale_bias, "logit_bias": self.bias_tensor()}
        return {name: tensor for name, tensor in found.items() if isinstance(tensor, nn.Parameter)}

    def graph_outputs(self, batch_size: int) -> dict[str, Tensor]:
        """``{"logit_scale": (B,), "logit_bias": (B,)}``: the learnable ones only, repeated per row (so that a features
        dict holding them can still be sliced and merged by rows), as tensors in the autograd graph (what
        :class:`~st_oblique.ObliquePooling` adds to its outputs while gradients are enabled, see its ``forward``)."""
        learnable = self.learnable_parameters()
        outputs = {"logit_scale": self().expand(batch_size)} if "logit_scale" in learnable else {}
        if "logit_bias" in learnable:
            outputs["logit_bias"] = learnable["logit_bias"].expand(batch_size)
        return outputs

    def values(self) -> dict[str, float]:
        """``{"logit_scale": scale, "logit_bias": bias}`` (the bias only when there is one)."""
        values = {"logit_scale": self.value}
        if self.bias is not None:
            values["logit_bias"] = self.bias
        return values

    def settings(self) -> dict[str, Any]:
        """What the owning module saves in its config (the values are in its weights too)."""
        return {
            "logit_scale": self.value,
            "learnable_logit_scale": self.learnable,
            "max_logit_scale": self.max_value,
            "logit_bias": self.bias,
            "learnable_logit_bias": self.learnable_bias,
        }

    def _refresh_fixed_value(self) -> None:
        if not self.learnable:
            self.fixed_value = round_float32(math.exp(self.log_scale_bias.item()))

    def _set_tensor(self, name: str, value: float, learnable: bool) -> None:
        existing = getattr(self, name, None)
        like = existing if isinstance(existing, Tensor) else self.log_scale_bias
        tensor = torch.tensor(value, dtype=torch.float32, device=like.device)
        if name in self._parameters or name in self._buffers:
            delattr(self, name)
        if learnable:
            self.register_parameter(name, nn.Parameter(tensor))
        else:
            self.register_buffer(name, tensor)

    def __float__(self) -> float:
        """The scale at full precision (``value`` rounds a learned one for display)."""
        return self.fixed_value if not self.learnable else math.exp(self.log_scale_bias.item())

    def extra_repr(self) -> str:
        bias = "" if self.bias is None else f", bias={self.bias:.4g}, learnable_bias={self.learnable_bias}"
        return f"value={self.value:.4g}, learnable={self.learnable}, max_value={self.max_value}{bias}"


def positive_float(name: str, value: Any) -> float:
    """``value`` as a positive finite float; a ValueError naming ``name`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}.") from None
    if isinstance(value, bool) or not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return number


def round_float32(value: float) -> float:
    """``value`` to the 7 significant digits a float32 holds (so 1.0 stays 1.0 after a log/exp round trip)."""
    return float(f"{value:.7g}")
