"""The comparison chart people read: a chance line over each zero-shot group, the legend beside the bars."""

from __future__ import annotations

from unittest import mock

import pytest
from matplotlib.figure import Figure

from st_oblique.data.datasets import load_dataset
from st_oblique.evaluation.chance import chance_levels
from st_oblique.evaluation.report import plot_results
from st_oblique.result_records import EvaluationResult


def result(model: str, dataset: str, task: str, metrics: dict, chance: dict | None) -> EvaluationResult:
    return EvaluationResult(model=model, pretrained="w-0", dataset=dataset, task=task, metrics=metrics,
                            settings={"chance": chance} if chance is not None else {})


def test_chance_levels_of_the_harness_metrics(data_root):
    digits = load_dataset("sklearn_digits", max_samples=50)
    assert chance_levels(digits) == {"acc1": 0.1, "acc5": 0.5, "mean_per_class_recall": 0.1}
    flickr = load_dataset("flickr8k_1k", data_root=data_root)
    levels = chance_levels(flickr)
    assert levels["image_retrieval_recall@1"] == pytest.approx(1 / len(flickr))
    assert levels["text_retrieval_recall@10"] == min(1.0, 10 / len(flickr))


def test_plot_draws_a_chance_line_per_group_and_the_legend_outside_the_axes(tmp_path):
    results = [
        result("a", "digits", "zeroshot_classification", {"acc1": 0.7}, {"acc1": 0.1}),
        result("b", "digits", "zeroshot_classification", {"acc1": 0.2}, {"acc1": 0.1}),
        result("a", "flickr", "zeroshot_retrieval",
               {"image_retrieval_recall@1": 0.3, "text_retrieval_recall@1": 0.4},
               {"image_retrieval_recall@1": 0.05, "text_retrieval_recall@1": 0.05}),
        result("a", "sts", "mteb", {"main_score": 0.8}, None),  # no chance level known: no line
    ]
    saved = []
    original = Figure.savefig

    def keep(figure, *args, **kwargs):
        saved.append(figure)
        return original(figure, *args, **kwargs)

    with mock.patch.object(Figure, "savefig", keep):
        path = plot_results(results, tmp_path / "results.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (axes,) = saved[0].axes
    lines = [collection for collection in axes.collections if collection.get_label() == "chance"]
    assert len(lines) == 1  # one legend entry ...
    segments = [segment for collection in axes.collections for segment in collection.get_segments()]
    assert sorted({round(segment[0][1], 3) for segment in segments}) == [0.05, 0.1]  # ... a line per group with one
    assert len(segments) == 3
    legend = axes.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["chance", "a", "b"]
    saved[0].canvas.draw()
    legend_box = legend.get_window_extent()
    assert legend_box.x0 >= axes.get_window_extent().x1  # beside the axes, never over a bar
