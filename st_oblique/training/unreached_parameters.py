"""Freeze the trainable parameters that the loss cannot reach, before a (multi-process) training run starts.

Why: ``DistributedDataParallel`` expects a gradient for every trainable parameter in every step. A parameter that
never reaches the loss gets none, and the second step fails ("Expected to have finished reduction in the prior
iteration ... Parameter indices which did not receive grad"). Oblique models have such parameters by construction:
a BERT text tower's ``pooler.dense`` (the oblique head reads the token states, never the pooler output), the
projections of a Hugging Face CLIP that the K-token heads replace, the tower and heads of a modality the training
data does not have (a dual encoder trained on text pairs). DDP's own remedy, ``find_unused_parameters=True``, does
not work for image-text batches: Sentence Transformers runs the model once per column (the images, then the
captions), and DDP then marks the parameters of the tower the second call skips ready at that call *and* when the
backward of the loss reaches them ("marked as ready twice"). Such parameters get no gradient in a single process
either (the optimizer skips them), so freezing them changes nothing about what is trained; it only makes every
trainable parameter reach the loss, so DDP can run with ``find_unused_parameters=False`` for every model.

Which parameters the loss reaches is found the way training finds it: one loss forward and backward on the first
rows of the training data, collated by the trainer's own data collator, with the random state, the gradients and
the buffers (BatchNorm statistics) restored afterwards. In a multi-process run every process does this and the
processes agree on the union (a parameter reached on any process stays trainable), so all of them freeze the same
set.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["freeze_unreached_parameters"]

logger = logging.getLogger(__name__)


def freeze_unreached_parameters(trainer: Any, num_rows: int = 2) -> list[str]:
    """Freeze (``requires_grad=False``) the trainable parameters of ``trainer.model`` that get no gradient from the
    trainer's loss, and return their names.

    Call it after building the trainer and before ``trainer.train()``; ``st-oblique train`` does, and then runs
    DDP with ``ddp_find_unused_parameters=False``. The note listing the frozen parameters is logged at INFO level.

    Args:
        trainer: a Sentence Transformers trainer (``SentenceTransformerTrainer``, ``ObliqueTrainer``) with its
            ``train_dataset`` (a dataset, a streamed ``IterableDataset``, or a dict of them with a dict of losses).
        num_rows: rows of each training dataset to run the loss on (2: in-batch negatives need two).

    Returns:
        The names of the parameters frozen (``model.named_parameters()`` names), empty when the loss reaches all.

    Relations:
        Used by :func:`st_oblique.app.train_pipeline.train`; :func:`st_oblique.training.parameter_fingerprints`
        checks afterwards that the processes of a run ended with the same weights.

    Example::

        trainer = st_oblique.ObliqueTrainer(model=model, args=args, train_dataset=train, loss=loss)
        frozen = freeze_unreached_parameters(trainer)  # e.g. ['0.auto_model.pooler.dense.weight', ...]
        trainer.train()
    """
    model = trainer.model
    trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    if not trainable:
        return []
    device = trainable[0][1].device
    reached = _reached_by_loss(trainer, [parameter for _, parameter in trainable], device, num_rows)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flags = torch.tensor(reached, dtype=torch.uint8, device=device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        reached = [bool(flag) for flag in flags.tolist()]
    frozen = [name for (name, parameter), hit in zip(trainable, reached, strict=True) if not hit]
    for (_, parameter), hit in zip(trainable, reached, strict=True):
        if not hit:
            parameter.requires_grad_(False)
    if frozen:
        logger.info(
            "Froze %d parameter tensor(s) (%d values) that the loss cannot reach: they would get no gradient, which "
            "multi-process training (DDP) rejects: %s",
            len(frozen), sum(parameter.numel() for (name, parameter) in trainable if name in set(frozen)),
            ", ".join(frozen),
        )
    return frozen


def _reached_by_loss(trainer: Any, parameters: list[nn.Parameter], device: torch.device, num_rows: int) -> list[bool]:
    """Whether each of ``parameters`` gets a gradient from one loss forward and backward on the first rows of each
    training dataset; gradients, buffers, train/eval modes and the random state are left as they were."""
    model = trainer.model
    losses = list(trainer.loss.values()) if isinstance(trainer.loss, Mapping) else [trainer.loss]
    all_parameters = {id(p): p for module in (model, *losses) if isinstance(module, nn.Module) for p in module.parameters()}
    gradients = {key: parameter.grad for key, parameter in all_parameters.items()}
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    modes = [(module, module.training) for module in model.modules()]
    datasets = trainer.train_dataset if isinstance(trainer.train_dataset, Mapping) else {None: trainer.train_dataset}
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        for parameter in all_parameters.values():
            parameter.grad = None
        model.train()  # the path training takes (a locked tower keeps itself in eval mode)
        with torch.random.fork_rng(devices=rng_devices):
            for name, dataset in datasets.items():
                rows = list(itertools.islice(iter(dataset), num_rows))
                inputs = _to_device(trainer.data_collator(rows), device)
                if name is not None:
                    inputs["dataset_name"] = name
                trainer.compute_loss(model, inputs).backward()
        return [parameter.grad is not None for parameter in parameters]
    finally:
        for key, parameter in all_parameters.items():
            parameter.grad = gradients[key]
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, training in modes:
            module.training = training


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_device(item, device) for item in value)
    return value
