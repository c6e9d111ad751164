"""Evaluation of oblique (and any other) SentenceTransformer models.

- :func:`zeroshot_classification` / :func:`zeroshot_retrieval`: CLIP_benchmark's zero-shot protocol and
  metrics, with template ensembles averaged token-wise for oblique models;
- :func:`mteb_model`: hand a model to ``mteb.evaluate`` for text and image tasks (named, revisioned,
  ``dot`` similarity for oblique models); :func:`register_mteb_model`: add a model to mteb's registry, for
  ``mteb.get_model`` and ``st-oblique mteb run``; :mod:`~st_oblique.evaluation.mteb_tasks`: offline MTEB tasks;
- :mod:`~st_oblique.data.datasets`: readers and a registry of evaluation datasets;
- :func:`run_evaluation` / :func:`compare_results`: whole runs with JSON, Markdown and PNG outputs (the
  functions behind ``st-oblique eval`` and ``st-oblique compare``).

Names are imported lazily (``mteb`` is only imported when an MTEB name is used).

Example::

    from st_oblique.evaluation import load_dataset, zeroshot_classification

    data = load_dataset("imagenette", data_root="../shared/data")
    metrics = zeroshot_classification(model, data.images, data.labels, data.classnames)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from st_oblique.lazy_exports import lazy_exports

_PUBLIC: dict[str, str] = {
    "zeroshot_classification": "st_oblique.evaluation.classification",
    "zeroshot_classifier": "st_oblique.evaluation.classification",
    "classification_metrics": "st_oblique.evaluation.classification",
    "zeroshot_retrieval": "st_oblique.evaluation.retrieval",
    "retrieval_metrics": "st_oblique.evaluation.retrieval",
    "DEFAULT_TEMPLATES": "st_oblique.data.templates",
    "load_templates": "st_oblique.data.templates",
    "load_classnames": "st_oblique.data.templates",
    "encode_images": "st_oblique.evaluation.encoding",
    "oblique_num_tokens": "st_oblique.evaluation.encoding",
    "load_dataset": "st_oblique.data.datasets",
    "DATASETS": "st_oblique.data.datasets",
    "ClassificationDataset": "st_oblique.data.datasets",
    "RetrievalDataset": "st_oblique.data.datasets",
    "mteb_model": "st_oblique.evaluation.mteb_wrapper",
    "mteb_model_meta": "st_oblique.evaluation.mteb_wrapper",
    "register_mteb_model": "st_oblique.evaluation.mteb_registry",
    "local_tasks": "st_oblique.evaluation.mteb_tasks",
    "run_mteb": "st_oblique.evaluation.mteb_runner",
    "EvaluationResult": "st_oblique.result_records",
    "read_results": "st_oblique.result_records",
    "run_evaluation": "st_oblique.evaluation.runner",
    "compare_results": "st_oblique.evaluation.runner",
    "weights_fingerprint": "st_oblique.evaluation.identity",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())


if TYPE_CHECKING:
    from st_oblique.data.datasets import DATASETS, ClassificationDataset, RetrievalDataset, load_dataset
    from st_oblique.data.templates import DEFAULT_TEMPLATES, load_classnames, load_templates
    from st_oblique.evaluation.classification import (
        classification_metrics,
        zeroshot_classification,
        zeroshot_classifier,
    )
    from st_oblique.evaluation.encoding import encode_images, oblique_num_tokens
    from st_oblique.evaluation.identity import weights_fingerprint
    from st_oblique.evaluation.mteb_registry import register_mteb_model
    from st_oblique.evaluation.mteb_runner import run_mteb
    from st_oblique.evaluation.mteb_tasks import local_tasks
    from st_oblique.evaluation.mteb_wrapper import mteb_model, mteb_model_meta
    from st_oblique.evaluation.retrieval import retrieval_metrics, zeroshot_retrieval
    from st_oblique.evaluation.runner import compare_results, run_evaluation
    from st_oblique.result_records import EvaluationResult, read_results
