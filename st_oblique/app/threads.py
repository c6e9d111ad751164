"""Threads that behave on a shared machine, for every ``st-oblique`` command.

torch's CPU kernels run on an OpenMP thread pool (one thread per core by default). Between two parallel regions
the pool's threads spin, waiting for work, unless ``OMP_WAIT_POLICY=PASSIVE`` tells them to sleep. On a machine
whose cores are busy with other work, the spinning threads take CPU time from the thread doing the work and from
the other processes: measured with ``evaluation/benchmarks/demo_threads.py`` (``evaluation/results/benchmarks/
demo_threads.json``), see the README's "Threads" paragraph.

:func:`configure_threads` runs before a command imports torch (the OpenMP runtime reads its environment once,
when torch loads it):

- ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets ``OMP_WAIT_POLICY`` (``ACTIVE`` restores
  spinning);
- ``--threads N``: ``OMP_NUM_THREADS=N`` and ``MKL_NUM_THREADS=N`` (torch's intra-op threads, and those of the
  processes the command starts: data-loader workers, ``accelerate``/``torchrun`` children inherit the environment),
  and ``torch.set_num_threads(N)`` when torch is already imported (the command run from Python).
"""

from __future__ import annotations

import os
import sys

__all__ = ["WAIT_POLICY", "configure_threads"]

WAIT_POLICY = "PASSIVE"
"""The OpenMP wait policy ``st-oblique`` uses unless ``OMP_WAIT_POLICY`` is set."""


def configure_threads(threads: int | None) -> None:
    """Set the OpenMP wait policy and, with ``threads``, the number of intra-op threads (see the module docstring).

    Args:
        threads: torch's intra-op threads (None: torch's default, one per core).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    if threads is None:
        return
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    if "torch" in sys.modules:  # run from Python after torch was imported: the environment came too late
        sys.modules["torch"].set_num_threads(threads)
