"""LogitScaleCallback: the learnable temperature of st-oblique losses in a trainer's logs and checkpoints.

Any trainer already trains a learnable scale (and SigLIP's bias) without weight decay and saves its value with the
model (see :class:`~st_oblique.losses.base.ObliqueLoss`). This callback adds what only a trainer callback can:

- ``on_log``: ``logit_scale`` (and ``logit_bias``) next to the training loss: in the logs, the progress bar,
  ``trainer.state.log_history`` and the reporting integrations (W&B, TensorBoard, ...). With a dict of several
  such losses the keys are prefixed with the dataset name.
- ``on_save``: the raw learnable values in ``st_oblique_temperatures.json`` of every checkpoint folder, and
  ``on_train_begin`` restores them when training resumes from a checkpoint (the trainer restores the model and
  the optimizer; the loss's own parameters are in neither).
- ``on_train_begin``: a warning when an optimizer built by hand decays a learnable scale or bias.

:class:`~st_oblique.ObliqueTrainer` adds it for you; with a plain trainer pass it yourself::

    trainer = SentenceTransformerTrainer(model=model, train_dataset=train, loss=loss,
                                         callbacks=[LogitScaleCallback(loss)])
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch
from sentence_transformers.base.model_card import get_losses
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from st_oblique.losses.base import ObliqueLoss

__all__ = ["TEMPERATURES_FILE", "LogitScaleCallback", "oblique_losses"]

logger = logging.getLogger(__name__)

TEMPERATURES_FILE = "st_oblique_temperatures.json"
"""Written into every checkpoint folder: the raw values of the losses' learnable parameters (log of the scale)."""


def oblique_losses(loss: Any) -> list[ObliqueLoss]:
    """The st-oblique losses in a loss, a dict of losses, or a wrapper loss (found the way ST's model card does)."""
    if loss is None or not isinstance(loss, (nn.Module, dict)):
        return []
    return [candidate for candidate in get_losses(loss) if isinstance(candidate, ObliqueLoss)]


class LogitScaleCallback(TrainerCallback):
    """Logs the learnable temperatures of st-oblique losses and keeps them in the trainer's checkpoints.

    Args:
        source: the trainer whose ``loss`` to follow (read at every event, so a loss replaced by ``model_init`` is
            followed too), or a loss or ``{dataset name: loss}`` dict.
    """

    def __init__(self, source: Any) -> None:
        super().__init__()
        self.source = source

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs) -> None:
        if state.global_step > 0:  # resuming
            self.restore(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))
        if optimizer is None:
            return
        for _, loss in self._named_losses():
            for parameter_name, parameter in loss.temperature_parameters().items():
                group = _group_of(optimizer, parameter)
                if group is not None and group.get("weight_decay"):
                    logger.warning(
                        f"{type(loss).__name__}'s learnable {parameter_name} is trained with weight_decay="
                        f"{group['weight_decay']}, which pulls it towards {'1' if 'scale' in parameter_name else '0'}."
                        " Put loss.temperature_parameters() in an optimizer group with weight_decay=0."
                    )

    def on_save(self, args, state, control, **kwargs) -> None:
        checkpoint = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        parameters = self._learnable_parameters()
        if state.is_world_process_zero and parameters and os.path.isdir(checkpoint):
            values = {name: {key: p.item() for key, p in named.items()} for name, named in parameters.items()}
            with open(os.path.join(checkpoint, TEMPERATURES_FILE), "w", encoding="utf-8") as handle:
                json.dump({"parameters": values}, handle, indent=2)

    def restore(self, checkpoint: str) -> None:
        """Set the learnable scales and biases to the values saved with ``checkpoint``."""
        parameters = self._learnable_parameters()
        if not parameters:
            return
        path = os.path.join(checkpoint, TEMPERATURES_FILE)
        if not os.path.isfile(path):
            logger.warning(
                f"Resuming without {path}: the learnable logit scale/bias of the st-oblique losses restart from their "
                "initial values (the model and the optimizer are restored from the checkpoint)."
            )
            return
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)["parameters"]
        with torch.no_grad():
            for name, named in parameters.items():
                for key, parameter in named.items():
                    if key in saved.get(name, {}):
                        parameter.fill_(saved[name][key])

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if not logs or "loss" not in logs:
            return
        values = self.values()
        logs.update(values)
        # Trainer.log appended a copy of the logs to the history before calling the callbacks.
        if values and state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)

    def values(self) -> dict[str, float]:
        """The current learnable temperatures, keyed as they are logged."""
        named = [(name, loss) for name, loss in self._named_losses() if loss.temperature_parameters()]
        prefix = len(named) > 1
        return {
            (f"{name}_{key}" if prefix else key): value
            for name, loss in named
            for key, value in loss.temperature_values().items()
        }

    def _learnable_parameters(self) -> dict[str, dict[str, nn.Parameter]]:
        """``{loss name: loss.temperature_parameters()}`` of the losses that have learnable temperatures."""
        return {name: loss.temperature_parameters() for name, loss in self._named_losses() if loss.temperature_parameters()}

    def _named_losses(self) -> list[tuple[str, ObliqueLoss]]:
        loss = getattr(self.source, "loss", None) if not isinstance(self.source, (nn.Module, dict)) else self.source
        if isinstance(loss, dict):
            return [(name, found) for name, value in loss.items() for found in oblique_losses(value)]
        return [("loss", found) for found in oblique_losses(loss)]


def _group_of(optimizer: torch.optim.Optimizer, parameter: nn.Parameter) -> dict | None:
    return next((group for group in optimizer.param_groups if any(p is parameter for p in group["params"])), None)
