"""Readable comparisons of evaluation results: a Markdown table and a PNG bar chart, models side by side.

Example::

    from st_oblique.evaluation.report import markdown_table, plot_results
    from st_oblique.result_records import read_results

    results = read_results(["results/baseline", "results/oblique"])
    print(markdown_table(results))
    plot_results(results, "comparison.png")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: leaves the user's backend and figures alone

from st_oblique.result_records import MAIN_METRICS, EvaluationResult

__all__ = ["PLOT_METRICS", "markdown_table", "model_labels", "plot_results"]

PLOT_METRICS: dict[str, tuple[str, ...]] = {
    "zeroshot_classification": ("acc1",),
    "zeroshot_retrieval": ("image_retrieval_recall@1", "text_retrieval_recall@1"),
    "mteb": ("main_score",),
}
"""The metrics drawn per task (tables show all of :data:`~st_oblique.result_records.MAIN_METRICS`)."""

_SHORT_NAMES = {
    "image_retrieval_recall": "text→image R",
    "text_retrieval_recall": "image→text R",
    "mean_per_class_recall": "mean per-class recall",
}


def model_labels(results: Sequence[EvaluationResult]) -> dict[tuple[str, str], str]:
    """Column label of every ``(model, pretrained)``: the model name, plus the revision when a name is ambiguous."""
    keys = list(dict.fromkeys((result.model, result.pretrained) for result in results))
    names = [model for model, _ in keys]
    return {
        (model, pretrained): model if names.count(model) == 1 else f"{model} ({pretrained})"
        for model, pretrained in keys
    }


def markdown_table(results: Sequence[EvaluationResult], digits: int = 4) -> str:
    """A GitHub Markdown table: one row per (dataset, metric), one column per model; the best value is bold."""
    if not results:
        return "_No results._\n"
    labels = model_labels(results)
    columns = list(labels.values())
    cells: dict[tuple[str, str, str], dict[str, float]] = {}
    for result in results:
        metrics = [name for name in MAIN_METRICS.get(result.task, ()) if name in result.metrics] or list(result.metrics)
        for metric in metrics:
            cells.setdefault((result.dataset, result.task, metric), {})[labels[result.model, result.pretrained]] = (
                float(result.metrics[metric])
            )
    lines = [
        "| dataset | task | metric | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---:|" * len(columns),
    ]
    for (dataset, task, metric), values in cells.items():
        finite = [value for value in values.values() if not math.isnan(value)]
        best = max(finite) if len(finite) > 1 else None
        row = []
        for column in columns:
            value = values.get(column)
            if value is None:
                row.append("")
            elif math.isnan(value):
                row.append("n/a")
            else:
                text = f"{value:.{digits}f}"
                row.append(f"**{text}**" if best is not None and value == best else text)
        lines.append(f"| {dataset} | {task} | {metric} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_results(results: Sequence[EvaluationResult], path: str | Path, title: str | None = None) -> Path:
    """A grouped bar chart (one group per dataset metric, one bar per model) saved as PNG at ``path``, with a dashed
    chance line over each group whose records carry their chance level (``settings["chance"]``, recorded by the
    harness for zero-shot datasets) and the legend beside the axes, never over the bars."""
    labels = model_labels(results)
    columns = list(labels.values())
    groups: dict[str, dict[str, float]] = {}
    chance: dict[str, float] = {}
    for result in results:
        for metric in PLOT_METRICS.get(result.task, (result.main_metric,)):
            value = result.metrics.get(metric) if metric else None
            if value is None or math.isnan(float(value)):
                continue
            group = f"{result.dataset}\n{_short(metric)}"
            groups.setdefault(group, {})[labels[result.model, result.pretrained]] = float(value)
            level = (result.settings.get("chance") or {}).get(metric)
            if level is not None:
                chance.setdefault(group, float(level))
    width = 0.8 / max(len(columns), 1)
    figure = Figure(figsize=(max(6.0, 1.6 * len(groups) + 3.5), 4.5), layout="constrained")
    axes = figure.subplots()
    for index, column in enumerate(columns):
        positions = [group + (index - (len(columns) - 1) / 2) * width for group in range(len(groups))]
        heights = [values.get(column, 0.0) for values in groups.values()]
        bars = axes.bar(positions, heights, width, label=column)
        axes.bar_label(bars, fmt="%.2f", fontsize=8, padding=1)
    for number, (position, group) in enumerate((position, group) for position, group in enumerate(groups)
                                               if group in chance):
        axes.hlines(chance[group], position - 0.45, position + 0.45, colors="black", linestyles="dashed",
                    linewidth=1.2, label="chance" if number == 0 else None)
    axes.set_xticks(range(len(groups)), list(groups), fontsize=9)
    axes.set_ylabel("score")
    axes.set_ylim(0, max([1.0, *(v for values in groups.values() for v in values.values())]) * 1.08)
    axes.set_title(title or "st-oblique evaluation")
    axes.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    axes.grid(axis="y", alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def _short(metric: str) -> str:
    for prefix, short in _SHORT_NAMES.items():
        if metric.startswith(prefix):
            return short + metric[len(prefix) :]
    return metric
