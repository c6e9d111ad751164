"""The topology study's outputs: ``results.md`` (all tables), ``summary.json`` and the PNG plots.

Every run of the plan is reported: the learning-rate trials, every arm of the grid, every noise level.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.studies.aggregate import (
    bar_plot,
    fmt_difference,
    fmt_mean_sd,
    line_plot,
    markdown_table,
    paired_difference,
)
from evaluation.studies.lit_heads import Arm

A_COLUMNS = (
    ("mean_recall", "mean R (6 recalls)"),
    ("image_retrieval_recall@1", "T→I R@1"),
    ("image_retrieval_recall@5", "T→I R@5"),
    ("image_retrieval_recall@10", "T→I R@10"),
    ("text_retrieval_recall@1", "I→T R@1"),
    ("text_retrieval_recall@5", "I→T R@5"),
    ("text_retrieval_recall@10", "I→T R@10"),
    ("acc1", "Imagenette acc@1"),
)
A_DIFF_COLUMNS = ("mean_recall", "image_retrieval_recall@1", "text_retrieval_recall@1", "acc1")
C_COLUMNS = (
    ("mean_recall", "mean R"),
    ("image_retrieval_recall@1", "T→I R@1"),
    ("text_retrieval_recall@1", "I→T R@1"),
    ("zs_shape_acc1", "zs shape"),
    ("zs_colour_acc1", "zs colour"),
    ("zs_relation_acc1", "zs relation"),
    ("zs_mean_acc1", "zs mean"),
)
C_DIFF_COLUMNS = ("mean_recall", "image_retrieval_recall@1", "zs_shape_acc1", "zs_colour_acc1", "zs_relation_acc1",
                  "zs_mean_acc1")
B_TASKS = (("LocalSTSBenchmark", "STSBenchmark"), ("LocalSICK-R", "SICK-R"), ("LocalSciFact", "SciFact nDCG@10"))


def condition_name(fraction: float) -> str:
    return "clean captions" if fraction == 0 else f"{round(fraction * 100)}% noisy captions"


def _by_seed(records: Sequence[dict], metric: str, split: str = "test") -> dict[int, float]:
    return {record["spec"]["seed"]: _metric(record, metric, split) for record in records}


def _metric(record: dict, metric: str, split: str = "test") -> float:
    if metric == "final_scale":
        return record["final_scale"]
    return record["metrics"][split][metric]


def _describe_arm(arm: dict) -> str:
    geometry = "sphere" if arm["num_tokens"] == 1 else f"oblique K={arm['num_tokens']}"
    pooling = {
        "split": "mean",
        "attention": f"attention ({arm['num_tokens']} quer{'y' if arm['num_tokens'] == 1 else 'ies'})",
        "first": f"{arm['num_tokens']} class tokens inside the text tower, image: "
        f"{arm.get('image_token_source') or 'first'}",
        "class_attention": f"{arm['num_tokens']} late class tokens ({arm.get('class_attention_layers') or 2} "
        "class-attention block(s))",
    }[arm["token_source"]]
    if arm["learnable_scale"]:
        scale = f"learnable, init {arm['scale']:.3g}, cap {arm['max_scale']:.3g}"
    else:
        scale = f"fixed {arm['scale']:.3g}"
    return f"{geometry}, d={arm['token_dim']}, {pooling}, scale {scale} (logits ≤ {Arm(**arm).logit_range:.3g})"


def regime_a_sections(config: dict, records: list[dict], plots_dir: Path) -> list[str]:
    """Markdown sections and plots of regime A."""
    main = [r for r in records if r["spec"]["phase"] == "main"]
    shared_lr = [r for r in main if r["spec"]["scale_learning_rate"] is None]
    arms = list(config["arms"])
    arm_specs = {r["spec"]["arm"]: r["spec"]["arm_config"] for r in records}
    seeds = config["seeds"]
    group: dict[tuple, list[dict]] = defaultdict(list)
    for record in shared_lr:
        if record["spec"]["seed"] in seeds:
            group[(record["spec"]["arm"], record["spec"]["noise_fraction"])].append(record)
    chosen = {r["spec"]["arm"]: r["spec"]["learning_rate"] for r in main}
    sections = ["## Regime A: LiT heads on frozen towers (Flickr8k-1k test split, zero-shot Imagenette)", ""]
    sections += headline_section(config, group)
    sections.append("Arms:\n")
    sections += [
        f"- `{name}`: {_describe_arm(arm_specs[name])}; learning rate {chosen.get(name, float('nan')):g}"
        for name in arms
        if name in arm_specs  # an arm without records yet (a study interrupted or run regime by regime)
    ]
    sections.append("")
    for fraction in config["conditions"]:
        rows = []
        for name in arms:
            runs = group.get((name, fraction), [])
            rows.append(
                [f"`{name}`", str(len(runs))]
                + [fmt_mean_sd([_metric(r, key) for r in runs]) for key, _ in A_COLUMNS]
                + [fmt_mean_sd([r["final_scale"] for r in runs], scale=1.0, digits=2)]
            )
        sections += [
            f"### {condition_name(fraction).capitalize()}: test metrics (%, mean ± sd over seeds {seeds})",
            "",
            markdown_table(["arm", "n", *[label for _, label in A_COLUMNS], "final scale"], rows),
            "",
        ]
    sections += comparison_sections(config, group, records, arms, chosen, A_COLUMNS, A_DIFF_COLUMNS)
    sections += noise_meter_section(config, main, plots_dir)
    for metric, filename, ylabel, title in (
        (
            "mean_recall",
            "regime_a_retrieval.png",
            "test mean recall (%)",
            "Flickr8k-1k test retrieval (mean of 6 recalls)",
        ),
        ("acc1", "regime_a_zeroshot.png", "Imagenette zero-shot acc@1 (%)", "Zero-shot Imagenette"),
    ):
        values = {
            condition_name(f): {n: [_metric(r, metric) for r in group.get((n, f), [])] for n in arms}
            for f in config["conditions"]
        }
        bar_plot(plots_dir / filename, values, ylabel, f"Regime A: {title}")
    sections += ["![retrieval](regime_a_retrieval.png)", "", "![zero-shot](regime_a_zeroshot.png)", ""]
    return sections


def comparison_sections(
    config: dict,
    group: dict[tuple, list[dict]],
    records: list[dict],
    arms: Sequence[str],
    chosen: dict[str, float],
    columns: Sequence[tuple[str, str]],
    diff_columns: Sequence[str],
    grids: dict[str, list[float]] | None = None,
) -> list[str]:
    """The paired-differences table of the configured comparisons and the learning-rate selection table
    (regimes A and C; ``grids``: per-arm grids, default the config's one grid). Differences pair the seeds both arms
    ran."""
    diff_rows = []
    for a, b in config.get("comparisons", []):
        for fraction in config["conditions"]:
            runs_a, runs_b = group.get((a, fraction), []), group.get((b, fraction), [])
            cells = [
                fmt_difference(paired_difference(_by_seed(runs_a, key), _by_seed(runs_b, key)))
                for key in diff_columns
            ]
            diff_rows.append([f"`{a}` − `{b}`", condition_name(fraction), *cells])
    sections = [
        "### Paired differences (percentage points, mean over seeds [95% t-interval]; bold: interval excludes 0)",
        "",
        markdown_table(["comparison", "condition", *[dict(columns)[key] for key in diff_columns]], diff_rows),
        "",
    ]
    selection = [r for r in records if r["spec"]["phase"] == "select"]
    grids = grids or dict.fromkeys(arms, config["lr_selection"]["grid"])
    grid = sorted({lr for name in arms for lr in grids[name]})
    rows = []
    for name in arms:
        cells = []
        for lr in grid:
            if lr not in grids[name]:
                cells.append("–")
                continue
            value = next(
                (
                    r["metrics"]["val"]["mean_recall"]
                    for r in selection
                    if r["spec"]["arm"] == name and r["spec"]["learning_rate"] == lr
                ),
                math.nan,
            )
            text = f"{100 * value:.1f}"
            cells.append(f"**{text}**" if chosen.get(name) == lr else text)
        rows.append([f"`{name}`", *cells])
    sections += [
        f"### Learning-rate selection (validation mean R %, clean captions, seed {config['lr_selection']['seed']}; "
        "bold: chosen)",
        "",
        markdown_table(["arm", *[f"lr {lr:g}" for lr in grid]], rows),
        "",
    ]
    return sections


def headline_rows(
    group: dict[tuple, list[dict]],
    arms: Sequence[str],
    fraction: float,
    reference: str | None,
    controls: dict[str, str],
    metrics: Sequence[str],
) -> list[list[str]]:
    """One row per arm: its control, n, and per metric the mean ± sd and the paired differences vs the reference
    and vs the arm's temperature control (regimes A and C)."""
    rows = []
    for name in arms:
        runs = group.get((name, fraction), [])
        row = [f"`{name}`", f"`{controls[name]}`" if name in controls else "–", str(len(runs))]
        for key in metrics:
            row.append(fmt_mean_sd([_metric(r, key) for r in runs]))
            for other in (reference, controls.get(name)):
                if other is None or other == name:
                    row.append("–")
                    continue
                diff = paired_difference(_by_seed(runs, key), _by_seed(group.get((other, fraction), []), key))
                row.append(fmt_difference(diff))
        rows.append(row)
    return rows


def headline_section(config: dict, group: dict[tuple, list[dict]]) -> list[str]:
    """Every arm's test mean R and Imagenette acc@1 with its paired difference from the reference sphere and from
    its temperature control (the sphere with the same logit range), one table per caption condition."""
    headline = config.get("headline")
    if not headline:
        return []
    reference, controls = headline["reference"], headline.get("controls", {})
    sections = [
        f"### Headline: test mean R and zero-shot Imagenette acc@1 (%, mean ± sd; Δ: paired difference in points "
        f"[95% t-interval], bold: excludes 0) vs the reference `{reference}` and vs the arm's temperature control",
        "",
    ]
    for fraction in config["conditions"]:
        rows = headline_rows(group, list(config["arms"]), fraction, reference, controls, ("mean_recall", "acc1"))
        header = ["arm", "temperature control", "n"]
        header += [f"{label}{suffix}" for label in ("mean R", "acc@1") for suffix in ("", " Δ ref", " Δ control")]
        sections += [f"#### {condition_name(fraction).capitalize()}", "", markdown_table(header, rows), ""]
    return sections


def noise_meter_section(config: dict, main: list[dict], plots_dir: Path) -> list[str]:
    meter = config["noise_meter"]
    noise = meter["noise"]
    lines: dict[str, dict] = {"learned scale": {}, "logit range (scale × K)": {}, "test mean recall (%)": {}}
    rows = []
    for scale_lr, seeds, label in (
        (None, meter["seeds"], "scale lr = head lr"),
        (meter["scale_learning_rate"], meter["scale_lr_seeds"], f"separate scale lr {meter['scale_learning_rate']:g}"),
    ):
        for name in meter["arms"]:
            per_noise = []
            for fraction in noise:
                per_noise.append(
                    [
                        r
                        for r in main
                        if r["spec"]["arm"] == name
                        and r["spec"]["noise_fraction"] == fraction
                        and r["spec"]["scale_learning_rate"] == scale_lr
                        and r["spec"]["seed"] in seeds
                    ]
                )
            key = f"{name} ({label})"
            k = config["arms"][name]["num_tokens"]
            lines["learned scale"][key] = (noise, [[r["final_scale"] for r in runs] for runs in per_noise])
            lines["logit range (scale × K)"][key] = (
                noise,
                [[r["final_scale"] * k for r in runs] for runs in per_noise],
            )
            lines["test mean recall (%)"][key] = (
                noise,
                [[100 * _metric(r, "mean_recall") for r in runs] for runs in per_noise],
            )
            rows.append(
                [f"`{name}`", label, f"{len(seeds)}"]
                + [
                    f"{fmt_mean_sd([r['final_scale'] for r in runs], 1.0, 2)} / {fmt_mean_sd([_metric(r, 'mean_recall') for r in runs])}"
                    for runs in per_noise
                ]
            )
    line_plot(
        plots_dir / "noise_meter.png",
        lines,
        "caption noise fraction",
        {"learned scale": "final learned scale (log)", "logit range (scale × K)": "scale × K (log)"},
        "The temperature as a noise meter",
        log_panels=("learned scale", "logit range (scale × K)"),
    )
    initial = {name: config["arms"][name]["scale"] for name in meter["arms"]}
    return [
        "### The temperature as noise meter: final learned scale / test mean R (%) by caption noise",
        "",
        f"Initial scales: {initial}. Caps: "
        + ", ".join(f"`{n}` {config['arms'][n].get('max_scale')}" for n in meter["arms"])
        + ".",
        "",
        markdown_table(["arm", "scale learning rate", "seeds", *[f"noise {round(100 * f)}%" for f in noise]], rows),
        "",
        "![noise meter](noise_meter.png)",
        "",
    ]


def _describe_c_arm(arm: dict) -> str:
    from evaluation.studies.scratch_towers import ScratchArm

    geometry = "sphere" if arm["num_tokens"] == 1 else f"oblique K={arm['num_tokens']}"
    head = {
        "sparo": "Sparo attention slots",
        "sphere_readout": f"Sparo's read-out: {arm.get('slots')} attention slots concatenated",
        "class_attention": f"{arm['num_tokens']} late class tokens (2 class-attention blocks after each tower)",
    }.get(arm["head"], f"{arm['num_tokens']} class token(s) in both towers")
    if arm["learnable_scale"]:
        scale = f"learnable, init {arm['scale']:.3g}, cap {arm['max_scale']:.3g}"
    else:
        scale = f"fixed {arm['scale']:.3g}"
    logit = ScratchArm(**arm).logit_range
    return f"{geometry}, d={arm['token_dim']}, {head}, {arm['reduction']} of cosines, scale {scale} (logits ≤ {logit:.3g})"


def regime_c_sections(config: dict, records: list[dict], plots_dir: Path) -> list[str]:
    """Markdown sections and the plot of regime C (from scratch, synthetic scenes)."""
    from evaluation.studies.scratch_towers import arm_grid_and_seeds

    main = [r for r in records if r["spec"]["phase"] == "main"]
    arms = list(config["arms"])
    arm_specs = {r["spec"]["arm"]: r["spec"]["arm_config"] for r in records}
    grids, arm_seeds = arm_grid_and_seeds(config)
    seeds = sorted({seed for values in arm_seeds.values() for seed in values})
    group: dict[tuple, list[dict]] = defaultdict(list)
    for record in main:
        if record["spec"]["seed"] in arm_seeds.get(record["spec"]["arm"], ()):
            group[(record["spec"]["arm"], record["spec"]["noise_fraction"])].append(record)
    chosen = {r["spec"]["arm"]: r["spec"]["learning_rate"] for r in main}
    sections = [
        "## Regime C: from scratch, K class tokens inside both towers (synthetic compositional scenes)",
        "",
        f"Data: `{json.dumps(config['data'])}`; towers `{json.dumps(config['towers'])}`; train "
        f"`{json.dumps(config['train'])}`. Retrieval: held-out test images (distinct scenes, 3 captions each); "
        "zero-shot: held-out shape–colour compositions, prompt templates never seen in training.",
        "",
    ]
    headline = config.get("headline") or {}
    reference, controls = headline.get("reference"), headline.get("controls", {})
    for fraction in config["conditions"]:
        rows = headline_rows(group, arms, fraction, reference, controls, ("mean_recall", "zs_mean_acc1"))
        header = ["arm", "temperature control", "n"]
        header += [f"{label}{suffix}" for label in ("mean R", "zs mean") for suffix in ("", " Δ ref", " Δ control")]
        sections += [
            f"### Headline, {condition_name(fraction)}: test mean R and zero-shot mean accuracy (%, mean ± sd; Δ: "
            f"paired difference [95% t-interval], bold: excludes 0) vs `{reference}` and the temperature control",
            "",
            markdown_table(header, rows),
            "",
        ]
    sections.append("Arms:\n")
    sections += [
        f"- `{name}`: {_describe_c_arm(arm_specs[name])}; learning rate {chosen.get(name, float('nan')):g}"
        for name in arms
        if name in arm_specs
    ]
    sections.append("")
    for fraction in config["conditions"]:
        rows = []
        for name in arms:
            runs = group.get((name, fraction), [])
            rows.append(
                [f"`{name}`", str(len(runs))]
                + [fmt_mean_sd([_metric(r, key) for r in runs]) for key, _ in C_COLUMNS]
                + [fmt_mean_sd([r["final_scale"] for r in runs], scale=1.0, digits=2)]
                + [fmt_mean_sd([r["cpu_seconds"] for r in runs], scale=1.0, digits=0)]
            )
        sections += [
            f"### {condition_name(fraction).capitalize()}: test metrics (%, mean ± sd over seeds {seeds})",
            "",
            markdown_table(["arm", "n", *[label for _, label in C_COLUMNS], "final scale", "CPU s"], rows),
            "",
        ]
    sections += comparison_sections(config, group, records, arms, chosen, C_COLUMNS, C_DIFF_COLUMNS, grids)
    sections += token_sections(config, group)
    values = {
        condition_name(f): {n: [_metric(r, "mean_recall") for r in group.get((n, f), [])] for n in arms}
        for f in config["conditions"]
    }
    bar_plot(plots_dir / "regime_c_retrieval.png", values, "test mean recall (%)", "Regime C: held-out image retrieval")
    values = {
        condition_name(f): {n: [_metric(r, "zs_mean_acc1") for r in group.get((n, f), [])] for n in arms}
        for f in config["conditions"]
    }
    bar_plot(
        plots_dir / "regime_c_zeroshot.png", values, "zero-shot mean acc@1 (%)", "Regime C: held-out compositions"
    )
    sections += ["![regime C retrieval](regime_c_retrieval.png)", "", "![regime C zero-shot](regime_c_zeroshot.png)", ""]
    return sections


def token_sections(config: dict, group: dict[tuple, list[dict]]) -> list[str]:
    """Collapse diagnostics and per-token probes of every arm (K=1: the vector cut into 16 chunks)."""
    from evaluation.studies.from_scratch import PROBE_ATTRIBUTES

    rows, probe_rows, points = [], [], []
    for fraction in config["conditions"]:
        for name in config["arms"]:
            runs = [r for r in group.get((name, fraction), []) if r.get("probes")]
            if not runs:
                continue
            k = runs[0]["spec"]["arm_config"]["num_tokens"]
            if k > 1:
                cells = []
                for modality in ("image", "text"):
                    cells.append(
                        fmt_mean_sd([r["collapse"][modality]["mean_pairwise_cosine"] for r in runs], 1.0, 3)
                    )
                    cells.append(fmt_mean_sd([r["collapse"][modality]["effective_rank"] for r in runs], 1.0, 2))
                rows.append([f"`{name}`", condition_name(fraction), *cells])
            probe_cells = []
            for attribute in PROBE_ATTRIBUTES:
                mean_token = [float(np.mean(r["probes"]["accuracy"][attribute])) for r in runs]
                best_token = [float(np.max(r["probes"]["accuracy"][attribute])) for r in runs]
                full = [r["probes"]["full_embedding_accuracy"][attribute] for r in runs]
                probe_cells.append(f"{fmt_mean_sd(mean_token, 100, 0)} / {fmt_mean_sd(best_token, 100, 0)} / "
                                   f"{fmt_mean_sd(full, 100, 0)}")
            counts: dict[str, int] = defaultdict(int)
            for r in runs:
                for attribute, count in r["probes"]["specialization"]["best_attribute_counts"].items():
                    counts[attribute] += count
            spread = [r["probes"]["specialization"]["mean_spread"] for r in runs]
            distinct = [r["probes"]["specialization"]["distinct_best"] for r in runs]
            probe_rows.append(
                [f"`{name}`", condition_name(fraction), runs[0]["probes"]["views"], *probe_cells,
                 fmt_mean_sd(spread, 1.0, 3), fmt_mean_sd(distinct, 1.0, 1),
                 ", ".join(f"{a} {c}" for a, c in sorted(counts.items(), key=lambda item: -item[1]))]
            )
            if k > 1:
                points += [
                    (r["probes"]["specialization"]["mean_spread"], r["metrics"]["test"]["zs_mean_acc1"],
                     r["metrics"]["test"]["mean_recall"])
                    for r in runs
                ]
    sections = [
        "### What the tokens learn: token collapse (test images and their first captions)",
        "",
        "Mean pairwise cosine between the K tokens of an input (1 = copies) and effective rank per input "
        "(1 = collapsed, K = orthogonal).",
        "",
        markdown_table(["arm", "condition", "image cos", "image eff. rank", "text cos", "text eff. rank"], rows),
        "",
        "### Per-token linear probes (image tokens; ridge classifier, half the probe set fits, half scores)",
        "",
        "Accuracy % per attribute as *mean over tokens / best token / whole embedding* (chance: shape 25, colour 20, "
        "size 50, position 11, background 33, relation 25). Spread: per attribute max − min normalized accuracy over "
        "tokens, averaged over attributes (0 = every token encodes every attribute alike); distinct: how many "
        "different attributes are some token's relative best; last column: which attribute the tokens are "
        "relatively best at, summed over seeds. K=1 arms: the 512-d vector cut into 16 chunks of 32 (a reference "
        "for what a chunk of an unstructured vector shows).",
        "",
        markdown_table(
            ["arm", "condition", "views", *PROBE_ATTRIBUTES, "spread", "distinct", "relative best (counts)"],
            probe_rows,
        ),
        "",
    ]
    if len(points) >= 3:
        spread, zs, recall = (np.array(values) for values in zip(*points, strict=True))
        sections += [
            f"Across the {len(points)} runs of the K > 1 arms, the correlation of the probe spread with zero-shot mean "
            f"accuracy is r = {np.corrcoef(spread, zs)[0, 1]:+.2f} and with test mean R r = "
            f"{np.corrcoef(spread, recall)[0, 1]:+.2f} (Pearson; arms and conditions pooled).",
            "",
        ]
    return sections


def regime_b_sections(config: dict, records: list[dict], plots_dir: Path) -> list[str]:
    arms = list(config["arms"])
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_arm[record["spec"]["arm"]].append(record)
    tasks = [(key, label) for key, label in B_TASKS if key in config["tasks"]]

    def scores(name: str, task: str) -> dict[int, float]:
        return {r["spec"]["seed"]: r["metrics"][task]["main_score"] for r in by_arm.get(name, [])}

    rows = []
    for name in arms:
        runs = by_arm.get(name, [])
        arm = runs[0]["spec"]["arm_config"] if runs else config["arms"][name]
        rows.append(
            [f"`{name}`", arm.get("description", ""), str(len(runs))]
            + [fmt_mean_sd(list(scores(name, key).values())) for key, _ in tasks]
            + [f"{np.mean([r.get('train_seconds', 0) for r in runs]):.0f}" if runs else "–"]
        )
    untouched = next((name for name in arms if config["arms"][name]["kind"] == "untouched"), None)
    reference = config.get("reference_arm")
    diff_rows = []
    for name in arms:
        if name == untouched:
            continue
        for baseline in (reference, untouched):
            if baseline is None or baseline == name:
                continue
            cells = []
            for key, _ in tasks:
                other = scores(baseline, key)
                if baseline == untouched:  # deterministic: the same value for every seed
                    other = dict.fromkeys(scores(name, key), next(iter(other.values()), math.nan))
                cells.append(fmt_difference(paired_difference(scores(name, key), other)))
            diff_rows.append([f"`{name}` − `{baseline}`", *cells])
    for name, other in config.get("comparisons", []):  # arm against arm, paired by seed
        cells = [fmt_difference(paired_difference(scores(name, key), scores(other, key))) for key, _ in tasks]
        diff_rows.append([f"`{name}` − `{other}`", *cells])
    bar_plot(
        plots_dir / "regime_b.png",
        {label: {name: list(scores(name, key).values()) for name in arms} for key, label in tasks},
        "score (%)",
        "Regime B: all-MiniLM-L6-v2 fine-tuned on text pairs",
    )
    return [
        "## Regime B: text-only fine-tuning of all-MiniLM-L6-v2",
        "",
        f"Pairs: {config['pairs']['flickr']} Flickr8k same-image caption pairs (the 1000 Flickr8k-1k images left out) + "
        f"{config['pairs']['msrp']} MSRP paraphrases; one epoch, batch {config['train']['batch_size']}, encoder lr "
        f"{config['train']['learning_rate']:g}, new oblique heads lr {config['train']['head_learning_rate']:g}. Tasks: "
        + ", ".join(f"{key} {settings or 'full'}" for key, settings in config["tasks"].items())
        + ".",
        "",
        f"### Scores (%, mean ± sd over seeds {config['seeds']})",
        "",
        markdown_table(["arm", "what", "n", *[label for _, label in tasks], "train s"], rows),
        "",
        "### Paired differences (points, mean [95% t-interval]; bold: excludes 0)",
        "",
        markdown_table(["comparison", *[label for _, label in tasks]], diff_rows),
        "",
        "![regime B](regime_b.png)",
        "",
    ]


def write_report(output_dir: Path, config: dict, records: dict[str, list[dict]], summary: dict[str, Any]) -> None:
    """``results.md``, ``summary.json`` and the plots in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    sections = ["# Topology study: oblique manifold vs sphere", "", f"Command: `{summary['command']}`", ""]
    all_records = records["A"] + records["B"] + records.get("C", [])
    if all_records:
        loads = [value for record in all_records for value in record["load_average_1min"]]
        compute = sum(record["wall_seconds"] for record in all_records)
        sections += [
            f"Runs: {len(all_records)} in the tables below "
            f"({summary['runs_reported_executed_now']} executed by this command, "
            f"{len(all_records) - summary['runs_reported_executed_now']} read from stored run records); "
            f"this command executed {summary['runs_executed']} runs and reused {summary['runs_reused']} stored ones "
            "(counting learning-rate selection runs, which the tables do not show); "
            f"summed run time {compute / 60:.1f} min; 1-minute load average during runs: mean {np.mean(loads):.2f}, "
            f"range {min(loads):.2f}–{max(loads):.2f} on {summary['environment']['cpu_count']} cores "
            f"({summary['environment']['cpu'] or 'cpu'}), torch threads {summary['environment']['torch_threads']}.",
            "",
            "This invocation's timings (s; runs reused from records take no time): "
            + ", ".join(f"{k} {v:.0f}" for k, v in summary["timings"].items() if isinstance(v, (int, float))),
            "",
        ]
        for regime in ("A", "B", "C"):
            if records.get(regime):
                seconds = sum(record["wall_seconds"] for record in records[regime])
                cpu = sum(record.get("cpu_seconds", math.nan) for record in records[regime])
                load = np.mean([value for record in records[regime] for value in record["load_average_1min"]])
                sections.append(
                    f"- Regime {regime}: {len(records[regime])} run records, summed run wall time {seconds / 60:.1f} min, "
                    f"summed process CPU time {cpu / 60:.1f} min, mean 1-minute load average {load:.2f}."
                )
        sections.append("")
    if records["A"]:
        notes = summary["timings"].get("regime_a_data_notes", {})
        if notes:
            sections += [f"Regime A data: `{json.dumps(notes)}`", ""]
        sections += regime_a_sections(config["regime_a"], records["A"], output_dir)
    if records["B"]:
        sections += regime_b_sections(config["regime_b"], records["B"], output_dir)
    if records.get("C"):
        notes = summary["timings"].get("regime_c_data_notes", {})
        if notes:
            sections += [f"Regime C data: `{json.dumps(notes)}`", ""]
        sections += regime_c_sections(config["regime_c"], records["C"], output_dir)
    (output_dir / "results.md").write_text("\n".join(sections) + "\n", encoding="utf-8")
    with open(output_dir / "summary.json", "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1, default=str)


__all__ = ["condition_name", "write_report"]
