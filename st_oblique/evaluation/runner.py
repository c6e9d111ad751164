"""``run_evaluation``: evaluate one or more models on zero-shot datasets and MTEB tasks, and write the results.

This is the function behind ``st-oblique eval``: it loads the
models, evaluates each on every dataset (CLIP_benchmark's zero-shot protocol, token-wise for oblique models)
and every MTEB task, and writes into ``output_dir``:

- ``records/``: one CLIP_benchmark-compatible JSON per (model, dataset) (see :mod:`st_oblique.result_records`;
  ``clip_benchmark build records/*.json`` tabulates them);
- ``mteb/``: mteb's own result cache;
- ``summary.json`` (all results and the run's settings), ``results.md`` (a table, models side by side) and
  ``results.png`` (a bar chart).

Example::

    from st_oblique.evaluation import run_evaluation

    results = run_evaluation(
        ["baseline=openai/clip-vit-base-patch32", "oblique=my-org/oblique-clip"],
        datasets=["imagenette", "flickr8k_1k"],
        mteb_tasks=["local"],
        output_dir="results/clip-vs-oblique",
        data_root="../shared/data",
    )
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from st_oblique._version import package_versions
from st_oblique.data.datasets import ClassificationDataset, RetrievalDataset, load_dataset
from st_oblique.data.templates import DEFAULT_TEMPLATES, Templates, load_classnames, load_templates
from st_oblique.devices import check_device
from st_oblique.errors import ObliqueLoadError
from st_oblique.evaluation.chance import chance_levels
from st_oblique.evaluation.classification import zeroshot_classification
from st_oblique.evaluation.encoding import embedding_num_tokens, progress_shown
from st_oblique.evaluation.identity import model_name, weights_fingerprint
from st_oblique.evaluation.model_loading import load_model, parse_model_spec
from st_oblique.evaluation.mteb_runner import resolve_mteb_tasks, run_mteb
from st_oblique.evaluation.report import markdown_table, plot_results
from st_oblique.evaluation.retrieval import zeroshot_retrieval
from st_oblique.model.files import check_model_folder, find_damaged_file
from st_oblique.modules.shape import oblique_shape
from st_oblique.output_folder import staged_output_dir
from st_oblique.result_records import RECORDS_DIR, EvaluationResult, read_results, write_result
from st_oblique.validators import check_token_counts

logger = logging.getLogger(__name__)

__all__ = ["ModelSpec", "compare_results", "evaluate_dataset", "resolve_templates", "run_evaluation", "write_report"]

ModelSpec = str | SentenceTransformer | tuple[str, str | SentenceTransformer]
"""``"path"``, ``"name=path"``, a loaded model, or ``(name, path or model)``."""


def resolve_templates(
    data: ClassificationDataset, templates: Sequence[str] | None = None, templates_file: str | Path | None = None
) -> Templates:
    """The templates for ``data``: given ones, else a templates file (CLIP_benchmark's lookup: the dataset's key,
    falling back to ``imagenet1k``), else the dataset's own, else OpenAI's 80 ImageNet templates."""
    if templates:
        return list(templates)
    if templates_file is not None:
        return load_templates(templates_file, dataset=data.template_key or data.name, classnames=data.classnames)
    return data.templates or list(DEFAULT_TEMPLATES)


def evaluate_dataset(
    model: SentenceTransformer,
    data: ClassificationDataset | RetrievalDataset,
    *,
    templates: Templates | None = None,
    batch_size: int = 64,
    device: str | None = None,
    num_workers: int = 0,
    show_progress_bar: bool | None = None,
) -> dict[str, float]:
    """CLIP_benchmark's metrics of ``model`` on one dataset (classification or retrieval, by the dataset's kind)."""
    options = {
        "batch_size": batch_size,
        "device": device,
        "num_workers": num_workers,
        "show_progress_bar": show_progress_bar,
    }
    if isinstance(data, ClassificationDataset):
        chosen = templates if templates is not None else resolve_templates(data)
        return zeroshot_classification(model, data.images, data.labels, data.classnames, chosen, **options)
    return zeroshot_retrieval(model, data.images, data.captions, **options)


def run_evaluation(
    models: Sequence[ModelSpec],
    datasets: Sequence[str] = (),
    mteb_tasks: Sequence[str] = (),
    output_dir: str | Path = "evaluation_results",
    *,
    mteb_benchmarks: Sequence[str] = (),
    dataset_paths: Mapping[str, str | Path] | None = None,
    data_root: str | Path | None = None,
    max_samples: int | None = None,
    batch_size: int = 64,
    device: str | None = None,
    num_workers: int = 0,
    templates: Sequence[str] | None = None,
    templates_file: str | Path | None = None,
    classnames_file: str | Path | None = None,
    mteb_overwrite_strategy: str = "only-missing",
    trust_remote_code: bool = False,
    show_progress_bar: bool | None = True,
    title: str | None = None,
    command: str | None = None,
    token_counts: Sequence[int] | None = None,
) -> list[EvaluationResult]:
    """Evaluate every model on every dataset and MTEB task; write JSON files, a Markdown table and a plot.

    Args:
        models: what to evaluate (see :data:`ModelSpec`); names label the results, revisions are weights
            fingerprints.
        datasets: zero-shot dataset names (see :func:`~st_oblique.data.datasets.load_dataset`).
        mteb_tasks: MTEB task names; ``"local"`` for all offline local tasks.
        output_dir: where results go (created; existing result files of the same model/dataset are replaced).
        mteb_benchmarks: MTEB benchmark names (e.g. ``"MTEB(eng, v2)"``, ``"MIEB(lite)"``; online).
        dataset_paths: ``{dataset name: location}`` overriding the registry's location under ``data_root``.
        data_root: the folder holding the datasets (default: ``$ST_OBLIQUE_DATA`` / ``$ST_OBLIQUE_SHARED/data``).
        max_samples: evaluate random subsets of this size (datasets: images; local MTEB tasks: pairs/queries/images).
        batch_size, device, num_workers: encoding settings.
        templates: templates for every classification dataset (overrides files and defaults).
        templates_file: CLIP_benchmark-style templates JSON (``{dataset: [templates]}``).
        classnames_file: CLIP_benchmark-style class names JSON (``{dataset: [names]}``) overriding the datasets'.
        mteb_overwrite_strategy: mteb's cache strategy for Hub tasks.
        trust_remote_code: passed when loading models from paths.
        show_progress_bar: tqdm bars over every encoding loop (datasets and MTEB tasks); False: none.
        title: the plot's title.
        command: the command line that started the run (recorded in ``summary.json``).
        token_counts: evaluate oblique models at their first k whole tokens for each k here (``truncate_dim=k*d``:
            the kept tokens stay unit vectors, nothing is renormalized); one result per k, labelled ``NAME k=K``
            and recording ``num_tokens=k``. None: all K tokens.

    Returns:
        All results, in evaluation order.

    Raises:
        FileNotFoundError / KeyError / ValueError: a dataset, task or model that cannot be found; raised before
            any evaluation starts, so a typo never costs a long run.
    """
    if not models:
        raise ValueError("Give at least one model to evaluate.")
    check_device(device, name="device")
    if not (datasets or mteb_tasks or mteb_benchmarks):
        raise ValueError("Nothing to evaluate: give datasets and/or MTEB tasks or benchmarks.")
    output_dir = Path(output_dir)
    dataset_paths = dict(dataset_paths or {})
    unknown_paths = set(dataset_paths) - set(datasets)
    if unknown_paths:
        raise ValueError(f"dataset_paths names datasets that are not evaluated: {sorted(unknown_paths)}.")
    loaded = [
        load_dataset(name, dataset_paths.get(name), data_root=data_root, max_samples=max_samples) for name in datasets
    ]
    for data in loaded:
        if isinstance(data, ClassificationDataset) and classnames_file is not None:
            data.classnames = load_classnames(classnames_file, dataset=data.template_key or data.name)
    chosen_templates = {
        data.name: resolve_templates(data, templates, templates_file)
        for data in loaded
        if isinstance(data, ClassificationDataset)
    }
    tasks = resolve_mteb_tasks(mteb_tasks, benchmarks=mteb_benchmarks, data_root=data_root, max_samples=max_samples)
    specs = [_split_spec(spec) for spec in models]
    for _, source in specs:  # every model is checked before the first forward pass
        _check_model_source(source)
    counts = _check_token_counts(token_counts)
    named = [name for name, _ in specs if name]
    if len(set(named)) < len(named):
        raise ValueError(f"Two models are named alike in {named}; give each a different NAME (NAME=PATH).")

    # Records, MTEB results and the report are written into a staging folder and moved into output_dir only when
    # every model has been evaluated: a failure leaves output_dir as it was (no records without a summary).
    # An MTEB cache that output_dir already has is copied into the staging folder and used from there.
    with staged_output_dir(output_dir, merge=True) as staging:
        mteb_cache = staging / "mteb"
        if (output_dir / "mteb").is_dir():
            shutil.copytree(output_dir / "mteb", mteb_cache)
        return _evaluate_models(
            specs, loaded, tasks, chosen_templates, staging, mteb_cache,
            device=device, trust_remote_code=trust_remote_code, batch_size=batch_size, num_workers=num_workers,
            show_progress_bar=show_progress_bar, max_samples=max_samples, mteb_overwrite_strategy=mteb_overwrite_strategy,
            token_counts=counts,
            run_settings={
                "command": command,
                "models": [name for name, _ in specs],
                "datasets": list(datasets),
                "mteb_tasks": list(mteb_tasks),
                "mteb_benchmarks": list(mteb_benchmarks),
                "max_samples": max_samples,
                "batch_size": batch_size,
                "device": device,
                "token_counts": None if counts == [None] else counts,
            },
            title=title,
        )


def _evaluate_models(
    specs, loaded, tasks, chosen_templates, output_dir: Path, mteb_cache: Path, *, device, trust_remote_code,
    batch_size, num_workers, show_progress_bar, max_samples, mteb_overwrite_strategy, run_settings, title,
    token_counts=(None,),
) -> list[EvaluationResult]:
    """The evaluation loop of :func:`run_evaluation`, writing into ``output_dir`` (its staging folder)."""
    results: list[EvaluationResult] = []
    for name, source in specs:
        model = (
            source
            if isinstance(source, SentenceTransformer)
            else load_model(source, device=device, trust_remote_code=trust_remote_code)
        )
        base_name = name or model_name(model)
        revision = weights_fingerprint(model)
        full_dim = getattr(model, "truncate_dim", None)
        for count in token_counts:
            model.truncate_dim = _token_truncation(model, base_name, count, full_dim)
            name = base_name if count is None else f"{base_name} k={count}"
            try:
                results += _evaluate_one(
                    model, name, revision, loaded, tasks, chosen_templates, output_dir, mteb_cache, device=device,
                    batch_size=batch_size, num_workers=num_workers, show_progress_bar=show_progress_bar,
                    max_samples=max_samples, mteb_overwrite_strategy=mteb_overwrite_strategy,
                )
            finally:
                model.truncate_dim = full_dim
        if not isinstance(source, SentenceTransformer):
            del model
            gc.collect()
    write_report(results, output_dir, title=title, settings=run_settings)
    return results


def _evaluate_one(
    model, name, revision, loaded, tasks, chosen_templates, output_dir, mteb_cache, *, device, batch_size, num_workers,
    show_progress_bar, max_samples, mteb_overwrite_strategy,
) -> list[EvaluationResult]:
    """One model (at its current ``truncate_dim``) on every dataset and MTEB task; records written as they come."""
    results: list[EvaluationResult] = []
    num_tokens = embedding_num_tokens(model)
    logger.info(f"Evaluating {name} ({revision}, K={num_tokens})")
    for data in loaded:
        start = time.monotonic()
        metrics = evaluate_dataset(
            model,
            data,
            templates=chosen_templates.get(data.name),
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            show_progress_bar=show_progress_bar,
        )
        seconds = time.monotonic() - start
        settings: dict[str, Any] = {"batch_size": batch_size, "max_samples": max_samples, "chance": chance_levels(data)}
        if data.name in chosen_templates:
            settings["num_templates"] = len(chosen_templates[data.name])
        result = EvaluationResult(
            model=name,
            pretrained=revision,
            dataset=data.name,
            task=data.task,
            metrics=metrics,
            num_tokens=num_tokens,
            num_samples=len(data),
            seconds=round(seconds, 2),
            settings=settings,
        )
        write_result(result, output_dir / RECORDS_DIR)
        results.append(result)
        logger.info(f"{name} on {data.name}: {metrics}")
    if tasks:
        for result in run_mteb(
            model,
            tasks,
            name=name,
            revision=revision,
            cache_dir=mteb_cache,
            overwrite_strategy=mteb_overwrite_strategy,
            batch_size=batch_size,
            show_progress_bar=progress_shown(show_progress_bar),
        ):
            write_result(result, output_dir / RECORDS_DIR)
            results.append(result)
    return results


def _check_token_counts(token_counts: Sequence[int] | None) -> list[int | None]:
    if token_counts is None:
        return [None]
    return check_token_counts(token_counts, name="token_counts (--num-tokens)")


def _token_truncation(model, name: str, count: int | None, full_dim: int | None) -> int | None:
    """``truncate_dim`` keeping the first ``count`` whole tokens of ``model`` (``full_dim`` for None)."""
    if count is None:
        return full_dim
    shape = oblique_shape(model)
    if shape is None:
        raise ValueError(
            f"--num-tokens {count}: {name} is not an oblique model (no K unit tokens to keep); evaluate it without "
            "--num-tokens."
        )
    available = shape.kept_tokens(full_dim)
    if count > available:  # counts are whole numbers of tokens >= 1 (_check_token_counts); this model has fewer
        raise ValueError(
            f"--num-tokens {count}: {name} has {available} tokens of d={shape.token_dim}; choose counts from 1 to "
            f"{available}."
        )
    return count * shape.token_dim


def compare_results(
    paths: Sequence[str | Path], output_dir: str | Path, *, title: str | None = None
) -> tuple[list[EvaluationResult], dict[str, Path]]:
    """Gather results written by earlier runs (folders or JSON files) and write a side-by-side report of them."""
    results = read_results(paths)
    if not results:
        raise ValueError(f"No result files found in {[str(path) for path in paths]}.")
    return results, write_report(results, output_dir, title=title, settings={"compared": [str(path) for path in paths]})


def write_report(
    results: Sequence[EvaluationResult],
    output_dir: str | Path,
    *,
    title: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``summary.json``, ``results.md`` and ``results.png`` for ``results`` into ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "settings": dict(settings or {}),
        "versions": package_versions(),
        "results": [result.to_json() for result in results],
    }
    paths = {
        "summary": output_dir / "summary.json",
        "table": output_dir / "results.md",
        "plot": output_dir / "results.png",
    }
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    heading = f"# {title}\n\n" if title else ""
    paths["table"].write_text(heading + markdown_table(results), encoding="utf-8")
    if results:
        plot_results(results, paths["plot"], title=title)
    return paths


def _check_model_source(source: str | SentenceTransformer) -> None:
    """Fail early on a model path that is neither a local folder nor shaped like a Hub id (``org/name``), and on a
    local model folder with a missing or damaged file (:func:`st_oblique.model.files.find_damaged_file`)."""
    if isinstance(source, SentenceTransformer):
        return
    if Path(source).exists():
        check_model_folder(source)
        problem = find_damaged_file(source)
        if problem:
            raise ObliqueLoadError(f"Cannot evaluate the model {source}: {problem}")
        return
    if source.count("/") > 1 or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"Model not found: {source} is not a folder (nor a Hub id like 'org/name').")


def _split_spec(spec: ModelSpec) -> tuple[str | None, str | SentenceTransformer]:
    if isinstance(spec, tuple):
        return spec
    if isinstance(spec, SentenceTransformer):
        return None, spec
    return parse_model_spec(spec)
