"""How ``SentenceTransformerTrainer`` and ``model.fit`` handle the learnable temperature of st-oblique losses.

Sentence Transformers optimizes the parameters of a loss, but on its own it would give a learnable logit scale
weight decay, never show its value and drop it when the model is saved. st-oblique fixes the three without any
change to the user's code: building an st-oblique loss installs a small wrapper around
``BaseTrainer.prepare_loss`` (the trainer method that receives every loss; Sentence Transformers' own
``SparseEncoderTrainer`` uses it the same way to attach the callback its ``SpladeLoss`` needs). For a trainer
whose losses include st-oblique losses, it

1. keeps the learnable scalars (``logit_scale``, ``logit_bias``) out of weight decay: for the trainer's own
   optimizer by excluding them in that trainer's ``get_decay_parameter_names`` (so the optimizer layout is the
   same on every run and checkpoints resume), and for an optimizer built beforehand (``model.fit`` builds its own)
   by moving them into its existing ``weight_decay=0`` group;
2. adds :class:`LogitScaleCallback`, which logs their values with the training loss (``logit_scale`` in the
   logs, the progress bar, ``trainer.state.log_history`` and W&B/TensorBoard) and writes the scale into the
   ``logit_scale`` config of every :class:`~st_oblique.ObliquePooling` before each checkpoint and at the end of
   training, so it is saved and loaded with the model and appears in its model card. It also saves the learnable
   parameters with every checkpoint and restores them when training resumes from one.

The scale can have its own learning rate with Sentence Transformers' ``learning_rate_mapping``: its parameter is
named ``logit_scale.log_value`` (``<dataset name>.logit_scale.log_value`` with a dict of losses), e.g.
``SentenceTransformerTrainingArguments(..., learning_rate_mapping={r"logit_scale": 1e-3})``; that group also
gets ``weight_decay=0``.

For a custom trainer that does not call ``BaseTrainer.prepare_loss``, pass ``callbacks=[LogitScaleCallback(loss)]``
and exclude ``loss.temperature_parameters()`` from weight decay.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

if TYPE_CHECKING:
    from st_oblique.losses.base import ObliqueLoss

logger = logging.getLogger(__name__)

TEMPERATURES_FILE = "st_oblique_temperatures.json"
"""Written into every checkpoint folder: the raw values of the losses' learnable parameters (log of the scale)."""


def install_trainer_integration() -> None:
    """Wrap ``BaseTrainer.prepare_loss`` so that trainers attach st-oblique's scale handling. Idempotent."""
    from sentence_transformers.base.trainer import BaseTrainer

    original = BaseTrainer.prepare_loss
    if getattr(original, "_st_oblique", False):
        return

    @functools.wraps(original)
    def prepare_loss(self, loss, model):
        prepared = original(self, loss, model)
        attach_to_trainer(self, prepared)
        return prepared

    prepare_loss._st_oblique = True
    BaseTrainer.prepare_loss = prepare_loss


def attach_to_trainer(trainer: Any, loss: nn.Module) -> None:
    """Give ``trainer`` st-oblique's scale handling if ``loss`` is or contains an st-oblique loss."""
    losses = _oblique_losses(loss)
    if not losses:
        return
    callbacks = trainer.callback_handler.callbacks
    if not any(isinstance(callback, LogitScaleCallback) for callback in callbacks):
        # Right after DefaultFlowCallback, like SparseEncoderTrainer's SpladeLoss callback: on_step_end then sees
        # the flow's should_save, and on_log runs before the reporting callbacks, which then log the scale too.
        callbacks.insert(1, LogitScaleCallback(trainer))
    if trainer.optimizer is not None:
        for oblique_loss in losses:
            move_out_of_weight_decay(trainer.optimizer, oblique_loss.temperature_parameters().values())
    elif not getattr(trainer, "_st_oblique_decay_exclusion", False):
        trainer.get_decay_parameter_names = _decay_names_without_temperatures(trainer)
        trainer._st_oblique_decay_exclusion = True


def _decay_names_without_temperatures(trainer: Any):
    original = trainer.get_decay_parameter_names

    def get_decay_parameter_names(model: nn.Module) -> list[str]:
        names = original(model)
        excluded = {
            id(parameter) for loss in _oblique_losses(trainer.loss) for parameter in loss.temperature_parameters().values()
        }
        parameters = dict(model.named_parameters(remove_duplicate=False))
        return [name for name in names if id(parameters.get(name)) not in excluded]

    return get_decay_parameter_names


def move_out_of_weight_decay(optimizer: torch.optim.Optimizer, parameters) -> None:
    """Move ``parameters`` from weight-decayed groups of an existing optimizer into a matching group without decay.

    The target group must exist and agree on every other hyperparameter (learning rate, betas...), so that an LR
    scheduler built on the optimizer keeps driving it; otherwise this warns and leaves the optimizer alone.
    """
    for parameter in parameters:
        source = _group_of(optimizer, parameter)
        if source is None or not source.get("weight_decay"):
            continue
        settings = {key: value for key, value in source.items() if key not in ("params", "weight_decay")}
        target = next(
            (
                group
                for group in optimizer.param_groups
                if not group.get("weight_decay")
                and {key: value for key, value in group.items() if key not in ("params", "weight_decay")} == settings
            ),
            None,
        )
        if target is None:
            logger.warning(
                "The optimizer applies weight_decay=%s to a learnable logit scale/bias of an st-oblique loss and has no "
                "matching group without weight decay to move it to. Weight decay pulls the scale towards 1; build the "
                "optimizer with loss.temperature_parameters() in a group with weight_decay=0.",
                source["weight_decay"],
            )
            continue
        source["params"] = [other for other in source["params"] if other is not parameter]
        target["params"].append(parameter)


def _group_of(optimizer: torch.optim.Optimizer, parameter: nn.Parameter) -> dict | None:
    return next((group for group in optimizer.param_groups if any(p is parameter for p in group["params"])), None)


def _oblique_losses(loss: Any) -> list[ObliqueLoss]:
    """The st-oblique losses in a loss, a dict of losses, or a wrapper loss (found the way ST's model card does)."""
    from sentence_transformers.base.model_card import get_losses

    from st_oblique.losses.base import ObliqueLoss

    if loss is None or not isinstance(loss, (nn.Module, dict)):
        return []
    return [candidate for candidate in get_losses(loss) if isinstance(candidate, ObliqueLoss)]


class LogitScaleCallback(TrainerCallback):
    """Logs the learnable temperature of st-oblique losses and records the scale in the model.

    Added automatically to ``SentenceTransformerTrainer`` and ``model.fit`` (see :mod:`st_oblique.losses.training`).

    - ``on_log``: adds ``logit_scale`` (and ``logit_bias`` for :class:`~st_oblique.ObliqueSigmoidLoss`) to every
      training log; with a dict of several such losses the keys are prefixed with the dataset name.
    - before every checkpoint and at the end of training: sets ``logit_scale`` of every ObliquePooling of the model
      to the loss's scale, so it is saved with the model. With several losses of different scales nothing is
      recorded (the model has no single scale).
    - with every checkpoint: writes the learnable parameters to ``st_oblique_temperatures.json`` in the checkpoint
      folder; resuming from a checkpoint of ``args.output_dir`` (``trainer.train(resume_from_checkpoint=...)``)
      restores them, as the trainer restores the model and the optimizer (loss parameters are in neither).
    - ``on_train_begin``: warns if an optimizer still applies weight decay to a learnable scale or bias.

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

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if control.should_save:
            self.record()

    def on_epoch_end(self, args, state, control, **kwargs) -> None:
        if control.should_save:
            self.record()

    def on_train_end(self, args, state, control, **kwargs) -> None:
        self.record()

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

    def _learnable_parameters(self) -> dict[str, dict[str, nn.Parameter]]:
        """``{loss name: loss.temperature_parameters()}`` of the losses that have learnable temperatures."""
        return {name: loss.temperature_parameters() for name, loss in self._named_losses() if loss.temperature_parameters()}

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

    def record(self) -> None:
        """Write the scale into the model's ObliquePooling configs (when all st-oblique losses agree on one)."""
        losses = [loss for _, loss in self._named_losses()]
        scales = {loss.scale for loss in losses}
        if len(scales) == 1:
            losses[0].record_scale_in_model()
        elif len(scales) > 1:
            logger.info("Not recording a logit scale in the model: its st-oblique losses use different scales %s.", scales)

    def _named_losses(self) -> list[tuple[str, ObliqueLoss]]:
        loss = getattr(self.source, "loss", None) if not isinstance(self.source, (nn.Module, dict)) else self.source
        if isinstance(loss, dict):
            return [(name, found) for name, value in loss.items() for found in _oblique_losses(value)]
        return [("loss", found) for found in _oblique_losses(loss)]


__all__ = ["LogitScaleCallback", "attach_to_trainer", "install_trainer_integration", "move_out_of_weight_decay"]
