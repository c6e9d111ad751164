"""The topology study's statistics: paired differences with Student-t intervals, checked against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from evaluation.studies.aggregate import (
    bar_plot,
    fmt_difference,
    fmt_mean_sd,
    line_plot,
    markdown_table,
    mean_sd,
    paired_difference,
)


def test_paired_interval_matches_a_hand_computation():
    a = {0: 0.50, 1: 0.56, 2: 0.53}
    b = {0: 0.47, 1: 0.50, 2: 0.52}
    diff = paired_difference(a, b)
    differences = np.array([0.03, 0.06, 0.01])
    half = 4.302652729911275 * differences.std(ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert diff.n == 3
    assert diff.mean == pytest.approx(differences.mean())
    assert (diff.low, diff.high) == pytest.approx((differences.mean() - half, differences.mean() + half))


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_paired_interval_matches_scipy_ttest_rel(n):
    rng = np.random.default_rng(n)
    a = rng.normal(0.6, 0.02, size=n)
    b = a - rng.normal(0.01, 0.01, size=n)
    diff = paired_difference(dict(enumerate(a)), dict(enumerate(b)))
    reference = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (diff.low, diff.high) == pytest.approx((reference.low, reference.high), rel=1e-10)
    assert diff.excludes_zero == (reference.low > 0 or reference.high < 0)


def test_pairs_by_seed_and_handles_single_or_missing_seeds():
    diff = paired_difference({0: 1.0, 1: 2.0, 7: 9.0}, {1: 1.5, 0: 0.0})  # seed 7 has no partner
    assert diff.n == 2 and diff.mean == pytest.approx((1.0 + 0.5) / 2)
    single = paired_difference({0: 0.3}, {0: 0.1})
    assert single.n == 1 and single.mean == pytest.approx(0.2) and math.isnan(single.low)
    assert not single.excludes_zero
    assert paired_difference({0: 1.0}, {1: 1.0}).n == 0


def test_formatting():
    assert mean_sd([0.5, 0.7]) == pytest.approx((0.6, np.std([0.5, 0.7], ddof=1)))
    assert fmt_mean_sd([0.5, 0.7]) == "60.0 ± 14.1"
    assert fmt_mean_sd([0.5]) == "50.0"
    significant = paired_difference({0: 0.6, 1: 0.61, 2: 0.62}, {0: 0.5, 1: 0.5, 2: 0.51})
    assert fmt_difference(significant).startswith("**+10.7 [")
    table = markdown_table(["a", "b"], [["1", "2"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]


def _saved_figures(monkeypatch) -> list:
    from matplotlib.figure import Figure

    saved, original = [], Figure.savefig

    def keep(figure, *args, **kwargs):
        saved.append(figure)
        return original(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def test_bar_plot_puts_the_legend_beside_the_bars(tmp_path, monkeypatch):
    saved = _saved_figures(monkeypatch)
    # tall bars in every arm: a legend inside the axes would cover one of them
    groups = {f"metric {g}": {f"arm {a}": [0.9, 0.95, 0.92] for a in range(5)} for g in range(3)}
    bar_plot(tmp_path / "bars.png", groups, "score (%)", "bars")
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"
    (axis,) = saved[0].axes
    legend = axis.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == list(groups)
    saved[0].canvas.draw()
    assert legend.get_window_extent().x0 >= axis.get_window_extent().x1


def test_line_plot_has_one_legend_below_the_panels(tmp_path, monkeypatch):
    saved = _saved_figures(monkeypatch)
    lines = {"sphere": ([1, 2, 4], [[0.3, 0.31], [0.35, 0.36], [0.4, 0.41]]),
             "oblique": ([1, 2, 4], [[0.32, 0.33], [0.38, 0.37], [0.43, 0.44]])}
    line_plot(tmp_path / "lines.png", {"R@1": lines, "time": lines}, "steps", {}, "lines")
    figure = saved[0]
    assert all(axis.get_legend() is None for axis in figure.axes)
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["sphere", "oblique"]  # each line once
    figure.canvas.draw()
    assert legend.get_window_extent().y1 <= min(axis.get_window_extent().y0 for axis in figure.axes)
