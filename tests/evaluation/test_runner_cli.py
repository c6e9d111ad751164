"""Whole runs: two models side by side, result files (CLIP_benchmark's schema), table, plot, comparison, CLI."""

from __future__ import annotations

import csv
import json
from argparse import Namespace

import pytest

from st_oblique.app.cli import main
from st_oblique.data.datasets import load_dataset
from st_oblique.evaluation import zeroshot_classification, zeroshot_retrieval
from st_oblique.evaluation.runner import compare_results, run_evaluation
from st_oblique.result_records import EvaluationResult, read_results

CLIP_BENCHMARK_KEYS = {"dataset", "model", "pretrained", "task", "metrics", "language"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, clip_model, oblique_model, data_root):
    output = tmp_path_factory.mktemp("run")
    results = run_evaluation(
        [("cosine", clip_model), ("oblique", oblique_model)],
        datasets=["sklearn_digits", "flickr8k_1k"],
        mteb_tasks=["LocalSTSBenchmark"],
        output_dir=output,
        data_root=data_root,
        max_samples=30,
        batch_size=16,
        templates=["a photo of the number {c}.", "the digit {c}"],
        show_progress_bar=False,
        title="tiny models",
        command="python -m evaluation run ...",
    )
    return output, results


def test_run_writes_clip_benchmark_records_that_match_direct_calls(run, oblique_model, data_root):
    output, results = run
    assert [(r.model, r.dataset) for r in results] == [
        ("cosine", "sklearn_digits"),
        ("cosine", "flickr8k_1k"),
        ("cosine", "LocalSTSBenchmark"),
        ("oblique", "sklearn_digits"),
        ("oblique", "flickr8k_1k"),
        ("oblique", "LocalSTSBenchmark"),
    ]
    records = sorted((output / "records").glob("*.json"))
    assert len(records) == 6
    for path in records:
        record = json.loads(path.read_text())
        assert CLIP_BENCHMARK_KEYS <= set(record) and record["pretrained"].startswith("w-")
    digits = load_dataset("sklearn_digits", max_samples=30)
    direct = zeroshot_classification(
        oblique_model, digits.images, digits.labels, digits.classnames, ["a photo of the number {c}.", "the digit {c}"]
    )
    assert results[3].metrics == direct and results[3].num_tokens == 4 and results[0].num_tokens == 1
    flickr = load_dataset("flickr8k_1k", data_root=data_root, max_samples=30)
    assert results[4].metrics == zeroshot_retrieval(oblique_model, flickr.images, flickr.captions)
    key = lambda result: (result.model, result.dataset)  # noqa: E731
    assert sorted(read_results([output]), key=key) == sorted(results, key=key)


def test_run_writes_a_readable_table_plot_and_summary(run):
    output, results = run
    table = (output / "results.md").read_text()
    assert "| dataset | task | metric | cosine | oblique |" in table
    for row in (
        "| sklearn_digits | zeroshot_classification | acc1 |",
        "| flickr8k_1k | zeroshot_retrieval | text_retrieval_recall@5 |",
        "| LocalSTSBenchmark | mteb | main_score |",
    ):
        assert row in table
    assert (output / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((output / "summary.json").read_text())
    assert summary["settings"]["command"] == "python -m evaluation run ..."
    assert [EvaluationResult.from_json(record) for record in summary["results"]] == results
    assert (output / "mteb" / "results").is_dir()  # mteb's own cache, under the run


def test_clip_benchmark_build_reads_the_records(run, tmp_path):
    cli = pytest.importorskip("clip_benchmark.cli")
    output, _ = run
    files = [str(path) for path in sorted((output / "records").glob("*zeroshot*.json"))]
    cli.main_build(Namespace(files=files, output=str(tmp_path / "benchmark.csv")))
    with open(tmp_path / "benchmark.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(row["model"], row["dataset"]) for row in rows} == {
        (model, dataset) for model in ("cosine", "oblique") for dataset in ("sklearn_digits", "flickr8k_1k")
    }


def test_compare_and_cli(run, tmp_path, capsys, clip_model, tiny_clip_dir, data_root):
    output, _ = run
    clip_model.save(str(tmp_path / "saved_clip"))
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model: [saved={tmp_path / 'saved_clip'}]\ndataset: [flickr8k_1k]\ndata-root: {data_root}\n"
        f"max-samples: 4\nbatch-size: 8\noutput-dir: {tmp_path / 'cli_run'}\n"
    )
    assert main(["eval", "--config", str(config), "--no-progress", "--template", "a photo of a {c}."]) == 0
    assert "| flickr8k_1k | zeroshot_retrieval |" in capsys.readouterr().out
    summary = json.loads((tmp_path / "cli_run" / "summary.json").read_text())
    assert summary["settings"]["command"].startswith("st-oblique eval --config")

    results, paths = compare_results([output, tmp_path / "cli_run"], tmp_path / "compared", title="all")
    assert {result.model for result in results} == {"cosine", "oblique", "saved"}
    assert "| cosine | oblique | saved |" in paths["table"].read_text()

    assert main(["compare", str(output), "--output-dir", str(tmp_path / "compared2")]) == 0
    assert "| cosine | oblique |" in capsys.readouterr().out
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "LocalFlickr8kT2IRetrieval" in listed
    assert "sklearn_digits_heldout" in listed  # what the README's eval command names (`st-oblique eval` knows it)


def test_bad_input_fails_before_any_work(tmp_path, capsys, clip_model):
    code = main(["eval", "--model", "x", "--dataset", "nope", "--output-dir", str(tmp_path / "out")])
    assert code == 2 and "Unknown dataset 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="imagenette not found"):
        run_evaluation([clip_model], datasets=["imagenette"], data_root=tmp_path, output_dir=tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    with pytest.raises(FileNotFoundError, match="Model not found"):
        run_evaluation([f"x={tmp_path}/missing"], datasets=["sklearn_digits"], output_dir=tmp_path / "out4")
    with pytest.raises(ValueError, match="Nothing to evaluate"):
        run_evaluation([clip_model], output_dir=tmp_path / "out3")
