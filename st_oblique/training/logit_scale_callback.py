"""LogitScaleCallback: the model's learnable temperature in a trainer's logs.

The logit scale (and a sigmoid loss's bias) is a parameter of the model (``ObliquePooling.temperature``), so every
trainer already trains it, saves it with the model and its checkpoints, restores it on resume and synchronises it
across processes. What only a trainer callback can add is its value in the logs:

- ``on_log``: ``logit_scale`` (and ``logit_bias``) next to the training loss: in the logs, the progress bar,
  ``trainer.state.log_history`` and the reporting integrations (W&B, TensorBoard, ...);
- ``on_train_begin``: a warning when an optimizer built by hand decays a learnable scale or bias.

:class:`~st_oblique.ObliqueTrainer` adds it for you; with a plain trainer pass it yourself::

    trainer = SentenceTransformerTrainer(model=model, train_dataset=train, loss=loss,
                                         callbacks=[LogitScaleCallback()])
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import TrainerCallback

from st_oblique.modules.logit_scale import LogitScale
from st_oblique.modules.shape import model_temperature, oblique_shape

__all__ = ["LogitScaleCallback", "learnable_temperature"]

logger = logging.getLogger(__name__)


def learnable_temperature(model: nn.Module | None) -> LogitScale | None:
    """The logit scale of an oblique ``model`` when anything of it is learned, else None (also for other models)."""
    if model is None or oblique_shape(model) is None:
        return None
    temperature = model_temperature(model)
    return temperature if temperature.learnable_parameters() else None


class LogitScaleCallback(TrainerCallback):
    """Logs the learnable logit scale and bias of the oblique model being trained (``logit_scale``, ``logit_bias``).

    Nothing is logged for a fixed scale. The callback reads the model the trainer hands to every event, so it needs
    no arguments.
    """

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs) -> None:
        temperature = learnable_temperature(model)
        if temperature is None or optimizer is None:
            return
        for name, parameter in temperature.learnable_parameters().items():
            group = next((g for g in optimizer.param_groups if any(p is parameter for p in g["params"])), None)
            if group is not None and group.get("weight_decay"):
                logger.warning(
                    f"The model's learnable {name} is trained with weight_decay={group['weight_decay']}, which pulls it "
                    f"towards {'1' if name == 'logit_scale' else '0'}. Put it in an optimizer group with weight_decay=0 "
                    "(ObliqueTrainer and Sentence Transformers' own optimizer groups do)."
                )

    def on_log(self, args, state, control, model=None, logs=None, **kwargs) -> None:
        temperature = learnable_temperature(model)
        if not logs or "loss" not in logs or temperature is None:
            return
        with torch.no_grad():
            values = temperature.values()
        logs.update(values)
        # Trainer.log appended a copy of the logs to the history before calling the callbacks.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)
