"""Statistics, tables and plots of the topology study.

- :func:`mean_sd` and :func:`paired_difference` (mean difference over seeds with a Student-t 95% interval);
- :func:`markdown_table` and the study's tables;
- PNG plots with matplotlib.

Example::

    diff = paired_difference({0: 0.52, 1: 0.55, 2: 0.50}, {0: 0.50, 1: 0.51, 2: 0.49})
    diff.mean, diff.low, diff.high      # mean of the per-seed differences and its 95% t-interval
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Difference:
    """Mean of paired differences ``a - b`` over n seeds with its two-sided t-interval (NaN bounds when n < 2)."""

    mean: float
    sd: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else math.nan


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> Difference:
    """The mean of ``a[seed] - b[seed]`` over the seeds both have, with its Student-t confidence interval.

    Pairing by seed removes what two arms of one seed share (batches, noise pattern, evaluation split), which is
    what makes small differences measurable with few seeds.
    """
    seeds = sorted(set(a) & set(b))
    differences = np.array([a[seed] - b[seed] for seed in seeds], dtype=float)
    n = differences.size
    if n == 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(differences.mean())
    if n < 2:
        return Difference(mean, math.nan, math.nan, math.nan, 1)
    sd = float(differences.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    return Difference(mean, sd, mean - half, mean + half, n)


def fmt_mean_sd(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    mean, sd = mean_sd(values)
    if math.isnan(mean):
        return "–"
    if math.isnan(sd):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}"


def fmt_difference(difference: Difference, scale: float = 100.0, digits: int = 1) -> str:
    if difference.n == 0:
        return "–"
    text = f"{difference.mean * scale:+.{digits}f}"
    if difference.n >= 2:
        text += f" [{difference.low * scale:+.{digits}f}, {difference.high * scale:+.{digits}f}]"
        if difference.excludes_zero:
            text = f"**{text}**"
    return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def bar_plot(
    path, groups: Mapping[str, Mapping[str, Sequence[float]]], ylabel: str, title: str, scale: float = 100.0
) -> None:
    """Grouped bars ``{group: {arm: per-seed values}}`` with sd error bars and the seeds as dots; the legend beside
    the axes (never over a bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(arm for bars in groups.values() for arm in bars))
    width = 0.8 / max(1, len(groups))
    fig, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(arms) + 2) + 2.2, 4.2), layout="constrained")
    for offset, (group, bars) in enumerate(groups.items()):
        positions = np.arange(len(arms)) + (offset - (len(groups) - 1) / 2) * width
        means = [mean_sd(bars.get(arm, []))[0] * scale for arm in arms]
        sds = [np.nan_to_num(mean_sd(bars.get(arm, []))[1]) * scale for arm in arms]
        axis.bar(positions, means, width, yerr=sds, capsize=3, label=group, alpha=0.8)
        for position, arm in zip(positions, arms, strict=True):
            values = np.asarray(bars.get(arm, []), dtype=float) * scale
            axis.scatter(np.full(values.shape, position), values, s=8, color="black", zorder=3)
    axis.set_xticks(np.arange(len(arms)))
    axis.set_xticklabels(arms, rotation=30, ha="right")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    axis.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def line_plot(
    path,
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[Sequence[float]]]]],
    xlabel: str,
    ylabels: Mapping[str, str],
    title: str,
    log_panels: Sequence[str] = (),
) -> None:
    """One panel per key of ``panels``: ``{line label: (x values, per-x lists of per-seed y values)}``, mean ± sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False, layout="constrained")
    for axis, (panel, lines) in zip(axes[0], panels.items(), strict=True):
        for label, (xs, ys) in lines.items():
            stats_ = [mean_sd(values) for values in ys]
            means = np.array([m for m, _ in stats_])
            sds = np.nan_to_num(np.array([s for _, s in stats_]))
            style = "--" if "separate" in label else "-"
            axis.errorbar(xs, means, yerr=sds, marker="o", capsize=3, linestyle=style, label=label)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabels.get(panel, panel))
        if panel in log_panels:
            axis.set_yscale("log")
        axis.set_title(panel)
    legend = {}  # one legend below the panels for the lines of all of them (a line in several panels once)
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=min(len(legend), 4), fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
