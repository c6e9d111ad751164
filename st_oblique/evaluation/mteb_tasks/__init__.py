"""Offline MTEB tasks: official mteb task classes whose data is read from local files.

=========================== ======================== ===========================================================
task                        type                     data (under the data root)
=========================== ======================== ===========================================================
LocalSTSBenchmark           STS (cosine_spearman)    ``stsbenchmark/stsbenchmark/sts-test.csv``
LocalSICK-R                 STS (cosine_spearman)    ``sick2014/SICK_*.txt`` (all 9927 pairs, as MTEB)
LocalSciFact                Retrieval (ndcg_at_10)   ``scifact_beir/`` (BEIR layout, test qrels)
LocalImagenetteZeroShot     ZeroShotClassification   ``imagenette/imagenette_val_224.tar``
LocalFlickr8kT2IRetrieval   Any2AnyRetrieval (t2i)   ``flickr8k_1k/``
LocalFlickr8kI2TRetrieval   Any2AnyRetrieval (i2t)   ``flickr8k_1k/``
=========================== ======================== ===========================================================

Example::

    from st_oblique.evaluation.mteb_tasks import local_tasks

    tasks = local_tasks(["LocalSTSBenchmark", "LocalImagenetteZeroShot"], data_root="../shared/data", max_samples=200)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mteb.abstasks import AbsTask

from st_oblique.evaluation.mteb_tasks.base import LocalTaskMixin
from st_oblique.evaluation.mteb_tasks.image import (
    LocalFlickr8kI2TRetrieval,
    LocalFlickr8kT2IRetrieval,
    LocalImagenetteZeroShot,
    LocalImageTextRetrieval,
    LocalImageZeroShot,
)
from st_oblique.evaluation.mteb_tasks.text import LocalSciFact, LocalSICKR, LocalSTSBenchmark

__all__ = [
    "LOCAL_TASKS",
    "LocalFlickr8kI2TRetrieval",
    "LocalFlickr8kT2IRetrieval",
    "LocalImageTextRetrieval",
    "LocalImageZeroShot",
    "LocalImagenetteZeroShot",
    "LocalSICKR",
    "LocalSTSBenchmark",
    "LocalSciFact",
    "LocalTaskMixin",
    "local_tasks",
]

LOCAL_TASKS: dict[str, type[AbsTask]] = {
    task.metadata.name: task
    for task in (
        LocalSTSBenchmark,
        LocalSICKR,
        LocalSciFact,
        LocalImagenetteZeroShot,
        LocalFlickr8kT2IRetrieval,
        LocalFlickr8kI2TRetrieval,
    )
}
"""The offline tasks by name."""


def local_tasks(
    names: Sequence[str] | None = None,
    *,
    data_root: str | Path | None = None,
    max_samples: int | None = None,
) -> list[AbsTask]:
    """Instances of the offline tasks ``names`` (default: all).

    Raises:
        KeyError: an unknown task name (the message lists the known ones).
    """
    unknown = [name for name in names or () if name not in LOCAL_TASKS]
    if unknown:
        raise KeyError(f"Unknown local MTEB tasks {unknown}; known: {sorted(LOCAL_TASKS)}.")
    chosen = [LOCAL_TASKS[name] for name in names] if names else list(LOCAL_TASKS.values())
    return [task(data_root=data_root, max_samples=max_samples) for task in chosen]
