"""Smoke test of ``evaluation/benchmarks/search_app.py``: both measured phases (build, then serve from the cache)
run in this process on a tiny model and report their numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("faiss", reason="the app extra is not installed: pip install 'st-oblique[app]'")

SCRIPT = Path(__file__).resolve().parents[2] / "evaluation" / "benchmarks" / "search_app.py"


def test_benchmark_phases_report_their_numbers(tiny_lit_dir, photo_folder, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("search_app_benchmark", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    table = tmp_path / "captions.tsv"
    table.write_text("image\tcaption\n" + "".join(f"p{i}.jpg\ta dog runs {i}\n" for i in range(5)))
    monkeypatch.setattr(benchmark, "QUERIES", benchmark.QUERIES[:4])
    common = [
        "--model",
        tiny_lit_dir,
        "--captions",
        str(table),
        "--images",
        str(photo_folder),
        "--index",
        str(tmp_path / "index"),
    ]
    build = benchmark.main(["--phase", "build", *common])
    assert build["num_images"] == 5 and build["num_captions"] == 5
    assert set(build["built_seconds"]) == {"images", "captions"} and build["peak_rss_mb"] > 0
    serve = benchmark.main(["--phase", "serve", *common, "--threads", "1"])
    assert serve["torch_threads"] == 1 and serve["queries"] == 4
    assert 0 < serve["steady_query_ms"] and 0 < serve["first_explain_ms"] and 0 < serve["image_query_ms"]
    text = benchmark.summary(
        {"build": build, "serve": serve, "machine": {"load_average_before": 1, "load_average_after": 2}}
    )
    assert "steady median" in text
