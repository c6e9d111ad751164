"""Tables and plots of the multi-vector study: ``results.md``, ``summary.json``, ``quality.png``, ``speed.png``.

Rows are *views* (what is stored per document and how it is scored): an oblique or single-vector arm is one view;
a multi-vector model gives three (pooled to 16 vectors, MUVERA at 512 floats, unpooled). Quality is mean ± sd over
seeds at the arm's chosen learning rate; differences are paired by seed against the reference view
(:func:`evaluation.studies.aggregate.paired_difference`, Student-t 95% intervals).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.studies.aggregate import bar_plot, fmt_difference, fmt_mean_sd, markdown_table, paired_difference

QUALITY = (
    ("scifact", "ndcg@10", "SciFact nDCG@10"),
    ("scifact", "recall@100", "SciFact R@100"),
    ("flickr", "recall@10", "Flickr8k-1k caption R@10"),
    ("stsb", "spearman", "STSb Spearman"),
)


def headline_views(config: dict, selection: dict) -> list[tuple[str, str, str]]:
    """``(row label, arm, view)`` of the headline table, in the config's arm order."""
    rows = []
    for name, arm in config["arms"].items():
        if arm["kind"] != "multivector":
            rows.append((name, name, name))
            continue
        muvera = selection.get("muvera", {}).get(name, {}).get("view")
        rows.append((f"{name}_pooled{arm.get('max_tokens', 16)}", name, f"{name}_pooled"))
        if muvera:
            rows.append((f"{name}_muvera{config['muvera']['output_dimension']}", name, muvera))
        rows.append((f"{name}_unpooled", name, f"{name}_unpooled"))
    return rows


def chosen_runs(config: dict, records: Sequence[dict], selection: dict, arm: str) -> list[dict]:
    learning_rate = selection["learning_rates"].get(arm)
    return [
        r
        for r in records
        if r["spec"]["arm"] == arm and r["spec"]["phase"] == "main" and r["spec"]["learning_rate"] == learning_rate
        and r["spec"]["seed"] in config["seeds"]
    ]


def per_seed(runs: Sequence[dict], view: str, task: str, metric: str, split: str = "test") -> dict[int, float]:
    return {
        r["spec"]["seed"]: r["metrics"][split][view][task][metric]
        for r in runs
        if view in r["metrics"][split] and task in r["metrics"][split][view]
    }


def _fmt(value: float | None, digits: int = 1, scale: float = 1.0) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * scale:.{digits}f}"


def quality_rows(config, records, selection, timing) -> tuple[list[list[str]], list[list[str]], dict]:
    reference = config.get("report", {}).get("reference")
    reference_runs = chosen_runs(config, records, selection, reference) if reference else []
    rows, difference_rows, plot_values = [], [], {label: {} for _, _, label in QUALITY}
    medians = (timing or {}).get("timing", {}).get("medians", {})
    full_quality = (timing or {}).get("quality", {})
    for label, arm, view in headline_views(config, selection):
        runs = chosen_runs(config, records, selection, arm)
        cells = [f"`{label}`", str(len(runs))]
        bytes_doc = [r["metrics"]["test"][view]["scifact"]["bytes_per_document"] for r in runs if view in r["metrics"]["test"]]
        cells.append(_fmt(float(np.mean(bytes_doc)) if bytes_doc else None, 0))
        for task, metric, title in QUALITY:
            values = per_seed(runs, view, task, metric)
            cells.append(fmt_mean_sd(list(values.values())))
            plot_values[title][label] = list(values.values())
        speed = medians.get(view, {})
        cells += [
            _fmt(full_quality.get(view, {}).get("ndcg@10"), 1, 100.0),
            _fmt(speed.get("exact_qps"), 0),
            _fmt(speed.get("hnsw_qps"), 0) if speed else "–",
        ]
        rows.append(cells)
        if reference and view != reference:
            diff_cells = [f"`{label}` − `{reference}`"]
            for task, metric, _ in QUALITY:
                diff_cells.append(
                    fmt_difference(paired_difference(per_seed(runs, view, task, metric),
                                                     per_seed(reference_runs, reference, task, metric)))
                )
            difference_rows.append(diff_cells)
    return rows, difference_rows, plot_values


def selection_rows(config, records, selection) -> list[list[str]]:
    from evaluation.studies.multivector import validation_score
    from evaluation.studies.multivector_arms import StudyArm, primary_view

    rows = []
    for name, spec in config["arms"].items():
        view = primary_view(StudyArm.from_config(name, spec))
        for r in sorted((r for r in records if r["spec"]["arm"] == name and r["spec"]["phase"] == "select"),
                        key=lambda r: r["spec"]["learning_rate"]):
            validation = r["metrics"]["validation"][view]
            chosen = "**chosen**" if selection["learning_rates"].get(name) == r["spec"]["learning_rate"] else ""
            rows.append([f"`{name}`", f"`{view}`", f"{r['spec']['learning_rate']:g}",
                         _fmt(validation["scifact"]["ndcg@10"], 1, 100.0),
                         _fmt(validation["flickr"]["recall@10"], 1, 100.0),
                         _fmt(validation_score(validation), 1, 100.0), chosen,
                         f"{r['train_seconds']:.0f}", f"{r['train_cpu_seconds']:.0f}"])
    return rows


def muvera_rows(config, records, selection) -> list[list[str]]:
    rows = []
    for name, chosen in selection.get("muvera", {}).items():
        runs = chosen_runs(config, records, selection, name)
        for view, validation in sorted(chosen["validation"].items(), key=lambda item: -item[1]):
            described = next((r["metrics"]["test"][view] for r in runs if view in r["metrics"]["test"]), {})
            cells = [f"`{view}`" + (" **chosen**" if view == chosen["view"] else ""), _fmt(validation, 1, 100.0)]
            cells += [fmt_mean_sd(list(per_seed(runs, view, task, metric).values())) for task, metric, _ in QUALITY]
            cells.append(_fmt(described.get("scifact", {}).get("bytes_per_document"), 0))
            rows.append(cells)
    return rows


def timing_rows(timing: dict | None) -> list[list[str]]:
    if not timing:
        return []
    rows = []
    for view, m in timing["timing"]["medians"].items():
        quality = timing["quality"].get(view, {})
        rows.append([
            f"`{view}`",
            _fmt(quality.get("bytes_per_document"), 0),
            _fmt(quality.get("ndcg@10"), 1, 100.0),
            _fmt(quality.get("recall@100"), 1, 100.0),
            _fmt(m.get("exact_build_seconds"), 3),
            _fmt(m.get("exact_qps"), 0),
            _fmt(m.get("exact_latency_ms"), 2),
            _fmt(m.get("hnsw_build_seconds"), 2),
            _fmt(m.get("hnsw_qps"), 0),
            _fmt(m.get("hnsw_latency_ms"), 3),
            _fmt(m.get(f"hnsw_recall_of_exact@{timing['timing']['top_k']}"), 1, 100.0),
            _fmt(m.get("hnsw_index_bytes_per_document", m.get("padded_bytes_per_document")), 0),
            _fmt(m.get("load_average_1min"), 1),
        ])
    return rows


def speed_plot(path: Path, timing: dict, labels: dict[str, str]) -> None:
    """SciFact nDCG@10 (seed 0, the timing corpus) against queries per second: one colour per view, circles for
    exact search, triangles for HNSW."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7.2, 4.4))
    for index, (view, m) in enumerate(timing["timing"]["medians"].items()):
        colour, quality = f"C{index}", 100 * timing["quality"][view]["ndcg@10"]
        axis.scatter(m["exact_qps"], quality, marker="o", s=45, color=colour, label=labels.get(view, view))
        if "hnsw_qps" in m:
            axis.scatter(m["hnsw_qps"], quality, marker="^", s=45, color=colour)
    axis.set_xscale("log")
    axis.set_xlabel("queries per second, 1 thread (log scale; circle: exact search, triangle: HNSW)")
    axis.set_ylabel(f"SciFact nDCG@10, {timing['corpus']['documents']} abstracts (%)")
    axis.set_title("Quality vs search speed (seed-0 models)")
    axis.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(output_dir: Path, config: dict, records: list[dict], selection: dict, timing: dict | None,
                 summary: dict[str, Any]) -> None:
    """``results.md``, ``summary.json`` and the plots in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    notes = summary["timings"].get("data_notes", {})
    rows, difference_rows, plot_values = quality_rows(config, records, selection, timing)
    labels = {view: label for label, _, view in headline_views(config, selection)}
    reference = config.get("report", {}).get("reference")
    loads = [value for r in records for value in r.get("load_average_1min", [])]
    timing_documents = ((timing or {}).get("corpus") or {}).get("documents", "–")
    sections = [
        "# Oblique vs multi-vector retrieval at equal bytes",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"Runs: {len(records)} ({summary['runs_executed']} executed now, {summary['runs_reused']} reused); summed run "
        f"wall time {sum(r['wall_seconds'] for r in records) / 60:.1f} min, summed process CPU time "
        f"{sum(r['cpu_seconds'] for r in records) / 60:.1f} min; 1-minute load average during runs "
        + (f"mean {np.mean(loads):.2f}, range {min(loads):.2f}–{max(loads):.2f}" if loads else "–")
        + f" on {summary['environment']['cpu_count']} cores ({summary['environment']['cpu'] or 'cpu'}); torch "
        f"threads {summary['environment']['torch_threads']}; sentence-transformers "
        f"{summary['environment']['sentence_transformers']}.",
        "",
        "This invocation's timings (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in summary["timings"].items() if isinstance(v, (int, float))),
        "",
        f"Data: `{json.dumps(notes)}`",
        "",
        f"Budget: base encoder `{Path(str(config['model'])).name}`, train `{json.dumps(config['train'])}`, learning-rate "
        f"grid {config['lr_selection']['grid']} chosen per arm on validation at seed {config['seeds'][0]}, seeds "
        f"{config['seeds']}.",
        "",
        f"## Headline (test; %, mean ± sd over seeds; bytes: float32 per SciFact document; last three columns: "
        f"seed 0, {timing_documents} SciFact abstracts and the 300 test claims, 1 thread)",
        "",
        markdown_table(
            ["view", "n", "bytes/doc", *[title for _, _, title in QUALITY], f"nDCG@10, {timing_documents} docs",
             "exact QPS", "HNSW QPS"],
            rows,
        ),
        "",
        f"### Paired differences vs `{reference}` (points, mean [95% t-interval]; bold: excludes 0)",
        "",
        markdown_table(["comparison", *[title for _, _, title in QUALITY]], difference_rows),
        "",
        "Views: " + "; ".join(f"`{label}` = `{view}`" for view, label in labels.items()) + ".",
        "",
        "Arms:",
        "",
        *[f"- `{name}`: {arm.get('description', '')}" for name, arm in config["arms"].items()],
        "",
        "## Learning rate (validation: SciFact train claims nDCG@10, Flickr8k validation images caption R@10)",
        "",
        markdown_table(["arm", "view", "lr", "val SciFact nDCG@10", "val Flickr R@10", "val mean", "", "train s",
                        "train CPU s"], selection_rows(config, records, selection)),
        "",
        "## MUVERA designs (512 floats; chosen on validation at seed 0; test mean ± sd over seeds)",
        "",
        markdown_table(["view", "val mean", *[title for _, _, title in QUALITY], "bytes/doc"],
                       muvera_rows(config, records, selection)),
        "",
    ]
    if timing:
        measure = timing["timing"]
        sections += [
            f"## Speed and index size (seed-0 models; SciFact {timing['corpus']['documents']} abstracts, "
            f"{timing['corpus']['queries']} test claims; median of {measure['repeats']} alternating rounds)",
            "",
            f"One thread everywhere. Exact: faiss `IndexFlatIP` (dense) or sentence-transformers' `util.maxsim` over "
            f"the padded document tensor (multi-vector; build = padding). HNSW: usearch, `metric=\"ip\"`, float32, "
            f"{json.dumps(measure['hnsw'])}. QPS: all queries in one call, top {measure['top_k']}; latency: median of "
            f"{measure['latency_queries']} one-query calls. Load average before {measure['load_average_before']}, "
            f"after {measure['load_average_after']} (the machine is shared: absolute numbers move with the load, "
            "ratios within a round much less).",
            "",
            markdown_table(
                ["view", "bytes/doc", "nDCG@10", "R@100", "exact build s", "exact QPS", "exact ms/query",
                 "HNSW build s", "HNSW QPS", "HNSW ms/query", "HNSW recall of exact top-k", "index bytes/doc",
                 "load"],
                timing_rows(timing),
            ),
            "",
            "Index bytes/doc: the serialized usearch index per document (vectors + graph) for dense views, the padded "
            "float32 tensor the MaxSim search scans for multi-vector views (bytes/doc counts only real vectors).",
            "",
            "![quality vs speed](speed.png)",
            "",
        ]
        speed_plot(output_dir / "speed.png", timing, labels)
    bar_plot(output_dir / "quality.png", plot_values, "score (%)", "Test quality per view (seeds as dots)")
    sections += ["![quality](quality.png)", ""]
    (output_dir / "results.md").write_text("\n".join(sections) + "\n", encoding="utf-8")
    with open(output_dir / "summary.json", "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1, default=str)


__all__ = ["headline_views", "write_report"]
