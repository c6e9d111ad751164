"""A fingerprint of a model's parameters on every process of a run: did the processes train one model?

Data-parallel training keeps one copy of the model per process and averages the gradients, so after every optimizer
step all copies must be equal, bit for bit. Only the first process saves the model, so a run whose copies drifted
apart (a gradient that skipped the all-reduce, a parameter updated on one process only) would look fine from its
output folder. ``st-oblique train`` compares the fingerprints after training, records them in
``training_report.json`` and logs an error when they differ.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["parameter_fingerprint", "parameter_fingerprints"]


def parameter_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the names, shapes, dtypes and bytes of ``model``'s parameters (hex).

    Buffers are left out: DDP broadcasts them from the first process before each forward, but each process's
    last forward updates its own (BatchNorm statistics of its own rows), so they may differ legitimately.
    """
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        values = parameter.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(values.shape)}:{values.dtype};".encode())
        digest.update(values.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def parameter_fingerprints(model: nn.Module) -> list[str]:
    """:func:`parameter_fingerprint` of every process of the running process group, in rank order (one entry
    without a process group). A collective: every process must call it.

    Example::

        trainer.train()
        fingerprints = parameter_fingerprints(trainer.model)
        assert len(set(fingerprints)) == 1, "the processes ended with different weights"
    """
    own = parameter_fingerprint(model)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [own]
    gathered: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, own)
    return [str(fingerprint) for fingerprint in gathered]
