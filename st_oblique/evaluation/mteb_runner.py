"""Run MTEB tasks and benchmarks (online by name, or st-oblique's offline local tasks) on a SentenceTransformer.

Example::

    from st_oblique.evaluation.mteb_runner import resolve_mteb_tasks, run_mteb

    tasks = resolve_mteb_tasks(["local", "STS12"], benchmarks=["MTEB(eng, v2)"], data_root="../shared/data")
    results = run_mteb(model, tasks, name="my-org/oblique-minilm", cache_dir="results/mteb")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import mteb
from mteb.abstasks import AbsTask
from sentence_transformers import SentenceTransformer

from st_oblique.evaluation.encoding import embedding_num_tokens
from st_oblique.evaluation.mteb_tasks import LOCAL_TASKS, LocalTaskMixin, local_tasks
from st_oblique.evaluation.mteb_wrapper import mteb_model
from st_oblique.result_records import EvaluationResult

logger = logging.getLogger(__name__)

__all__ = ["ALL_LOCAL", "resolve_mteb_tasks", "run_mteb"]

ALL_LOCAL = "local"
"""Task name that stands for every offline local task the model can run."""


def resolve_mteb_tasks(
    names: Sequence[str] = (),
    *,
    benchmarks: Sequence[str] = (),
    data_root: str | Path | None = None,
    max_samples: int | None = None,
) -> list[AbsTask]:
    """Task objects for task names and benchmark names.

    Args:
        names: ``"local"`` (all offline local tasks), local task names (``LocalSTSBenchmark``...) or any mteb task
            name (``STS12``, ``CIFAR10ZeroShot``...; their data comes from the Hub or the local HF cache).
        benchmarks: mteb benchmark names, e.g. ``"MTEB(eng, v2)"``, ``"MIEB(lite)"``.
        data_root: where the local tasks' data is.
        max_samples: subset size for the local tasks (pairs, queries or images).

    Raises:
        KeyError: an unknown task or benchmark name.
    """
    tasks: list[AbsTask] = []
    local = [name for name in names if name in LOCAL_TASKS]
    if ALL_LOCAL in names:
        local = list(LOCAL_TASKS)
    if local:
        tasks += local_tasks(local, data_root=data_root, max_samples=max_samples)
    hub = [name for name in names if name not in LOCAL_TASKS and name != ALL_LOCAL]
    if hub:
        try:
            tasks += list(mteb.get_tasks(tasks=hub))
        except KeyError as error:
            raise KeyError(f"Unknown MTEB task among {hub}: {error}. Local tasks: {sorted(LOCAL_TASKS)}.") from error
    for benchmark in benchmarks:
        try:
            tasks += list(mteb.get_benchmark(benchmark).tasks)
        except KeyError as error:
            raise KeyError(f"Unknown MTEB benchmark {benchmark!r}: {error}") from error
    return tasks


def run_mteb(
    model: SentenceTransformer,
    tasks: Sequence[AbsTask],
    *,
    name: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    overwrite_strategy: str = "only-missing",
    batch_size: int = 64,
    show_progress_bar: bool = True,
    raise_error: bool = False,
) -> list[EvaluationResult]:
    """Evaluate ``model`` on ``tasks`` with ``mteb.evaluate`` and return one result per task.

    Tasks whose modalities the model lacks (e.g. image tasks for a text model) are skipped with a warning.
    Local tasks always run again (their data may have changed under the same name); other tasks follow
    ``overwrite_strategy``. Failures (e.g. a Hub task while offline) are logged and skipped unless
    ``raise_error``.

    Args:
        model: any SentenceTransformer.
        tasks: mteb task objects (see :func:`resolve_mteb_tasks`).
        name, revision: what the results are stored under (see :func:`~st_oblique.evaluation.mteb_wrapper`).
        cache_dir: mteb's result cache (``{cache_dir}/results/{name}/{revision}/{task}.json``); None: not saved.
        overwrite_strategy: mteb's strategy for cached results of Hub tasks.
        batch_size: encode batch size.
    """
    wrapper = mteb_model(model, name=name, revision=revision, show_progress_bar=show_progress_bar)
    meta = wrapper.mteb_model_meta
    runnable = [task for task in tasks if set(task.metadata.modalities) <= set(meta.modalities)]
    skipped = [task.metadata.name for task in tasks if task not in runnable]
    if skipped:
        logger.warning(f"Skipping MTEB tasks {skipped}: {name} handles {meta.modalities} inputs only.")
    cache = mteb.ResultCache(str(cache_dir)) if cache_dir is not None else None
    num_tokens = embedding_num_tokens(model)
    results: list[EvaluationResult] = []
    for group, strategy in (
        ([task for task in runnable if isinstance(task, LocalTaskMixin)], "always"),
        ([task for task in runnable if not isinstance(task, LocalTaskMixin)], overwrite_strategy),
    ):
        if not group:
            continue
        start = time.monotonic()
        outcome = mteb.evaluate(
            wrapper,
            group,
            cache=cache,
            overwrite_strategy=strategy,
            encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress_bar},
            show_progress_bar=show_progress_bar,
            raise_error=raise_error,
            co2_tracker=False,
        )
        for error in outcome.exceptions or []:
            logger.error(f"MTEB task {error.task_name} failed for {name}: {error.exception}")
        seconds = (time.monotonic() - start) / max(len(group), 1)
        for task_result in outcome.task_results:
            results.append(
                EvaluationResult(
                    model=name,
                    pretrained=meta.revision or "",
                    dataset=task_result.task_name,
                    task="mteb",
                    metrics={"main_score": float(task_result.get_score()), **_first_scores(task_result)},
                    main_metric="main_score",
                    num_tokens=num_tokens,
                    seconds=task_result.evaluation_time or seconds,
                    settings={"mteb_version": mteb.__version__, "dataset_revision": task_result.dataset_revision},
                )
            )
    return results


def _first_scores(task_result) -> dict[str, float]:
    """The numeric scores of the first split and subset (the only ones for single-subset tasks)."""
    for split_scores in task_result.scores.values():
        for subset_scores in split_scores:
            return {
                key: float(value)
                for key, value in subset_scores.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "main_score"
            }
    return {}
