"""Leaving a multi-process run: release the process group while the interpreter is fully alive.

Why: ``torch.distributed.destroy_process_group()`` only removes the group from torch's registry. The group itself
(with gloo: a transport thread and worker threads holding the last collective's work and its tensors) lives as
long as something references it, and after training the ``DistributedDataParallel`` wrapper does: the trainer
holds it, and Sentence Transformers' trainer puts it into the loss (``loss.model``), which the saved model may
reference in turn. The wrapper sits in reference cycles, so only the cyclic garbage collector frees it. A group
still alive when the interpreter shuts down is destroyed during finalization, when a gloo worker thread that drops
a tensor's Python reference can no longer take the GIL: the thread is unwound, and the process aborts with
"terminate called without an active exception" (SIGABRT). Whether that happens depends on how far the threads
have got when the interpreter finalizes, so it showed only under load (pytorch/pytorch#190489 describes the same
crash for a group never destroyed). :func:`leave_process_group` makes the release deterministic: the loss gets
the unwrapped model back, the wrapper is collected, and the group is destroyed, its threads joined, before the
function returns.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import torch
from torch import nn

__all__ = ["leave_process_group", "unwrap_model_in_loss"]


def unwrap_model_in_loss(trainer: Any) -> None:
    """Give ``trainer``'s loss (and the losses it wraps) the unwrapped ``trainer.model`` in place of the
    ``DistributedDataParallel`` (or compiled) wrapper the trainer put there for training; the trainer drops its
    reference to the wrapper too. Call it once training is over: evaluation and saving use the model itself."""
    model = trainer.model
    wrapped = getattr(trainer, "model_wrapped", model)
    losses = list(trainer.loss.values()) if isinstance(trainer.loss, dict) else [trainer.loss]
    for loss in losses:
        if isinstance(loss, nn.Module):
            _replace(loss, wrapped, model)
    trainer.model_wrapped = model


def leave_process_group() -> list[str]:
    """Destroy the default process group (if any) after collecting the garbage that still references it, and return
    the names of gloo threads still running afterwards (empty when the group was released; always empty off Linux,
    where the threads cannot be listed). Every process of a run calls it once its collectives are done."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return []
    gc.collect()  # the DDP wrapper and its reducer sit in reference cycles: free them before the group goes
    torch.distributed.destroy_process_group()
    gc.collect()
    return [name for name in _thread_names() if "gloo" in name]


def _replace(module: nn.Module, wrapped: nn.Module, model: nn.Module) -> None:
    for name, child in module.named_children():
        if child is wrapped and wrapped is not model:
            setattr(module, name, model)
        elif child is not model:
            _replace(child, wrapped, model)


def _thread_names() -> list[str]:
    tasks = f"/proc/{os.getpid()}/task"
    if not os.path.isdir(tasks):
        return []
    names = []
    for task in os.listdir(tasks):
        try:
            with open(f"{tasks}/{task}/comm", encoding="utf-8") as handle:
                names.append(handle.read().strip())
        except OSError:  # the thread ended meanwhile
            continue
    return names
