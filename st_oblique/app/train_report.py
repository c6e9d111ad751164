"""What a training run leaves next to its model: ``training_report.json`` and a PNG with the loss curve, the
learned logit scale (and bias) and the evaluation scores.

Example::

    from st_oblique.app.train_report import plot_training, training_curves

    curves = training_curves(trainer.state.log_history)     # {"step": [...], "loss": [...], "logit_scale": [...]}
    plot_training(curves, {"imagenette acc1": {"untrained": 0.10, "trained": 0.62}}, "training.png",
                  chance={"imagenette acc1": 0.10})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from st_oblique.evaluation.report import PLOT_METRICS

__all__ = ["COLLAPSE_SAMPLES", "CURVE_KEYS", "plot_training", "score_table", "token_collapse_report", "training_curves"]

COLLAPSE_SAMPLES = 256
"""Rows of the training data whose inputs the trained model's token-collapse diagnostics are computed on."""

CURVE_KEYS = ("loss", "logit_scale", "logit_bias", "learning_rate", "grad_norm")
"""The per-step values kept from the trainer's log history."""


def training_curves(log_history: Sequence[Mapping[str, Any]]) -> dict[str, list[float | None]]:
    """The training logs as aligned lists: ``step`` and every :data:`CURVE_KEYS` entry that was logged.

    Args:
        log_history: ``trainer.state.log_history`` (training entries have ``loss``; the final summary and
            evaluation entries are skipped).
    """
    entries = [entry for entry in log_history if "loss" in entry and "step" in entry]
    curves: dict[str, list[float | None]] = {"step": [int(entry["step"]) for entry in entries]}
    for key in CURVE_KEYS:
        if any(key in entry for entry in entries):
            curves[key] = [_number(entry.get(key)) for entry in entries]
    return curves


def token_collapse_report(model: Any, dataset: Any, limit: int = COLLAPSE_SAMPLES) -> dict[str, Any] | None:
    """Token-collapse diagnostics (:func:`st_oblique.diagnostics.token_collapse.collapse_diagnostics`) of the trained
    ``model`` on the first ``limit`` rows of its training data, per input column (anchor and positive: images and
    texts are diagnosed apart). None for streamed data, a model that is not oblique, or K=1.

    Returns:
        ``{"rows": n, "columns": {column: {mean_pairwise_cosine, effective_rank, ...}}}``.
    """
    from datasets import Dataset

    from st_oblique.diagnostics.token_collapse import collapse_diagnostics
    from st_oblique.modules.shape import oblique_shape

    shape = oblique_shape(model)
    if not isinstance(dataset, Dataset) or len(dataset) < 2 or shape is None or shape.num_tokens < 2:
        return None  # K=1 (a plain CLIP trained by st-oblique) has no tokens to collapse
    sample = dataset.select(range(min(limit, len(dataset))))
    columns = {}
    for column in list(sample.column_names)[:2]:
        values = [value for value in sample[column] if value is not None]
        if len(values) >= 2:
            columns[column] = collapse_diagnostics(model, values).to_dict()
    return {"rows": len(sample), "columns": columns} if columns else None


def score_table(results_by_model: Mapping[str, Sequence[Any]]) -> dict[str, dict[str, float]]:
    """``{"<dataset> <metric>": {model label: value}}`` for the main metric of each task.

    Args:
        results_by_model: ``{label: [EvaluationResult, ...]}`` from the evaluation harness.
    """

    table: dict[str, dict[str, float]] = {}
    for label, results in results_by_model.items():
        for result in results:
            metrics = PLOT_METRICS.get(result.task) or tuple(result.metrics)[:1]
            for metric in metrics:
                value = result.metrics.get(metric)
                if isinstance(value, (int, float)):
                    table.setdefault(f"{result.dataset} {metric}", {})[label] = float(value)
    return table


def plot_training(
    curves: Mapping[str, Sequence[float | None]],
    scores: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    title: str | None = None,
    chance: Mapping[str, float] | None = None,
    fixed_scale: float | None = None,
) -> Path:
    """Write a PNG: training loss, logit scale (and bias), and a bar chart of the scores with chance levels.

    Args:
        curves: :func:`training_curves` output.
        scores: :func:`score_table` output (``{score name: {model label: value}}``).
        path: the PNG to write.
        title: the figure's title.
        chance: ``{score name: chance level}``, drawn as dashed lines.
        fixed_scale: the scale of a loss whose scale was not learned (drawn as a constant).
    """
    figure = Figure(figsize=(15, 4.2))  # no pyplot: leaves the user's backend and figures alone
    loss_axis, scale_axis, score_axis = figure.subplots(1, 3)
    steps = list(curves.get("step", []))
    _plot_curve(loss_axis, steps, curves.get("loss"), "training loss", "C0")
    loss_axis.set_title("Training loss")
    if curves.get("logit_scale"):
        _plot_curve(scale_axis, steps, curves["logit_scale"], "logit scale (learned)", "C1")
        scale_axis.set_title("Learned logit scale (1 / temperature)")
    elif fixed_scale is not None:
        span = [steps[0], steps[-1]] if steps else [0, 1]
        scale_axis.plot(span, [fixed_scale] * 2, color="C1", label=f"logit scale (fixed at {fixed_scale:g})")
        scale_axis.set_ylim(0, 2 * fixed_scale)  # the default limits would put the line on the frame
        scale_axis.grid(alpha=0.3)
        scale_axis.set_title("Logit scale (fixed)")
    else:
        scale_axis.set_title("Logit scale")
    if curves.get("logit_bias"):
        bias_axis = scale_axis.twinx()
        _plot_curve(bias_axis, steps, curves["logit_bias"], "logit bias", "C2")
        bias_axis.set_ylabel("logit bias")
    scale_axis.set_xlabel("step")
    scale_axis.legend(loc="best", fontsize=8)

    names = list(scores)
    labels = list(dict.fromkeys(label for values in scores.values() for label in values))
    width = 0.8 / max(len(labels), 1)
    for index, label in enumerate(labels):
        positions = [position + (index - (len(labels) - 1) / 2) * width for position in range(len(names))]
        values = [scores[name].get(label, math.nan) for name in names]
        bars = score_axis.bar(positions, values, width, label=label, color=f"C{index + 3}")
        score_axis.bar_label(bars, labels=[f"{value:.3f}" for value in values], fontsize=8)
    for position, name in enumerate(names):
        if chance and name in chance:
            score_axis.hlines(chance[name], position - 0.45, position + 0.45, colors="black", linestyles="dashed",
                              label="chance" if position == 0 else None)
    score_axis.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    score_axis.set_ylim(0, 1.05)
    score_axis.set_title("Evaluation" if names else "Evaluation (none)")
    if labels:
        score_axis.legend(loc="best", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path


def _plot_curve(axis, steps: list[int], values: Sequence[float | None] | None, label: str, color: str) -> None:
    if not values:
        axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
        return
    points = [(step, value) for step, value in zip(steps, values, strict=False) if value is not None]
    axis.plot([step for step, _ in points], [value for _, value in points], color=color, marker=".", label=label)
    axis.set_xlabel("step")
    axis.grid(alpha=0.3)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
