"""Evaluation results as records, saved as CLIP_benchmark-compatible JSON files.

One :class:`EvaluationResult` is one model on one dataset (or MTEB task). :func:`write_result` saves it the way
CLIP_benchmark does: ``{dataset}_{pretrained}_{model}_{language}_{task}.json`` holding
``{"dataset", "model", "pretrained", "task", "metrics", "language"}`` (``pretrained`` is the weights
fingerprint), so ``clip_benchmark build *.json`` can tabulate them. st-oblique adds ``main_metric``,
``num_tokens``, ``num_samples``, ``seconds`` and ``settings`` next to those keys.

Example::

    from st_oblique.result_records import EvaluationResult, read_results, write_result

    result = EvaluationResult(model="oblique", pretrained="w-1234", dataset="imagenette",
                              task="zeroshot_classification", metrics={"acc1": 0.41, "acc5": 0.83})
    path = write_result(result, "results/run1")
    assert read_results(["results/run1"]) == [result]
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["MAIN_METRICS", "RECORDS_DIR", "EvaluationResult", "read_results", "result_filename", "write_result"]

RECORDS_DIR = "records"
"""The subfolder of a run's output folder that holds its result files."""

MAIN_METRICS: dict[str, tuple[str, ...]] = {
    "zeroshot_classification": ("acc1", "acc5", "mean_per_class_recall"),
    "zeroshot_retrieval": (
        "image_retrieval_recall@1",
        "image_retrieval_recall@5",
        "image_retrieval_recall@10",
        "text_retrieval_recall@1",
        "text_retrieval_recall@5",
        "text_retrieval_recall@10",
    ),
    "mteb": ("main_score",),
}
"""The metrics reported in tables for each task (all metrics are kept in the JSON files)."""


@dataclass
class EvaluationResult:
    """One model evaluated on one dataset or MTEB task.

    Attributes:
        model: the model's display name.
        pretrained: the weights' revision (a fingerprint by default); CLIP_benchmark's ``pretrained`` field.
        dataset: the dataset or MTEB task name.
        task: ``"zeroshot_classification"``, ``"zeroshot_retrieval"`` or ``"mteb"``.
        metrics: metric name -> value.
        language: CLIP_benchmark's language field.
        main_metric: the metric plots show (default: the first of :data:`MAIN_METRICS` for the task).
        num_tokens: K of the model (1 for ordinary models).
        num_samples: images (or queries/pairs) evaluated.
        seconds: wall-clock time of the evaluation.
        settings: anything else worth recording (templates, batch size, versions...).
    """

    model: str
    pretrained: str
    dataset: str
    task: str
    metrics: dict[str, float]
    language: str = "en"
    main_metric: str | None = None
    num_tokens: int | None = None
    num_samples: int | None = None
    seconds: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.main_metric is None:
            candidates = [name for name in MAIN_METRICS.get(self.task, ()) if name in self.metrics]
            self.main_metric = candidates[0] if candidates else next(iter(self.metrics), None)

    def to_json(self) -> dict[str, Any]:
        """CLIP_benchmark's keys first, then st-oblique's; NaN metrics become null (valid JSON)."""
        record = asdict(self)
        record["metrics"] = {name: None if _is_nan(value) else value for name, value in self.metrics.items()}
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> EvaluationResult:
        """Read a record written by :meth:`to_json` or by CLIP_benchmark itself (missing fields get defaults)."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in record.items() if key in known}
        values["metrics"] = {
            name: float("nan") if value is None else value for name, value in record["metrics"].items()
        }
        values.setdefault("pretrained", "")
        return cls(**values)


def result_filename(result: EvaluationResult) -> str:
    """CLIP_benchmark's default name ``{dataset}_{pretrained}_{model}_{language}_{task}.json`` (path-safe)."""
    name = f"{result.dataset}_{result.pretrained}_{result.model}_{result.language}_{result.task}.json"
    return re.sub(r"[^\w.@+=-]+", "_", name)


def write_result(result: EvaluationResult, directory: str | Path) -> Path:
    """Write ``result`` as JSON into ``directory`` (created if needed); returns the file's path.

    The file is written to a temporary name first and then renamed, so an interrupted run never leaves a
    half-written result behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / result_filename(result)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def read_results(paths: Iterable[str | Path]) -> list[EvaluationResult]:
    """Results from JSON files, folders of them, and run folders (their ``records/``); other JSON is skipped.

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    results = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"No results at {path}.")
        files = sorted([*path.glob("*.json"), *path.glob(f"{RECORDS_DIR}/*.json")]) if path.is_dir() else [path]
        for file in files:
            record = json.loads(file.read_text(encoding="utf-8"))
            if isinstance(record, dict) and {"dataset", "model", "task", "metrics"} <= set(record):
                results.append(EvaluationResult.from_json(record))
    return results


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
