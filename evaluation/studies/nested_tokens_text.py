"""Quality vs number of tokens k on text (STSBenchmark, SciFact): the text part of the nested-tokens study.

    python -m evaluation.studies.nested_tokens_text              # 3 arms x 3 seeds, ~45 min on 2 busy CPU cores
    python -m evaluation.studies.nested_tokens_text --smoke      # tiny subsets, 1 seed (checks the pipeline)

The topology study's regime B (:mod:`evaluation.studies.text_finetune`): all-MiniLM-L6-v2 fine-tuned for one epoch
on the same 1280 text pairs (960 Flickr8k same-image caption pairs + 320 MSRP paraphrases), batch 32, encoder lr
5e-5, new heads lr 1e-3, the same batches for every arm of a seed. Arms, all at K*d = 384 (MiniLM's width):

- ``oblique_plain``: K=16 class tokens of d=24 (:func:`st_oblique.oblique_text_model`) and
  :class:`st_oblique.ObliqueContrastiveLoss` with scale 1.25 (logits in [-20, 20], as regime B), trained at K only;
- ``oblique_nested``: the same model and loss inside :class:`st_oblique.ObliqueMatryoshkaLoss` (prefixes 1, 2, 4,
  8, 16 whole tokens, weights 1, matched logit range);
- ``sphere_matryoshka``: the model as published (mean pooling + Normalize) with Sentence Transformers'
  ``MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), [384, 192, 96, 48, 24])``: the same sizes k*24.

Every model is evaluated at k = 1, 2, 4, 8, 16 (``model.truncate_dim = k*24``, what ``encode(truncate_dim=...)``
does; oblique models score the sum of their first k cosines, the sphere model the cosine of its first k*24
dimensions) on the offline MTEB tasks of the project's harness: STSBenchmark test (all 1379 pairs, Spearman) and
SciFact (100 test claims, their abstracts + 100 others, nDCG@10).

Writes ``--output-dir`` (default ``runs/evaluation/nested_tokens/text``; the committed
``evaluation/results/nested_tokens/text/`` only with ``--overwrite``): ``runs/*.json`` (one per arm and seed, reused when run again),
``results.md``, ``summary.json`` and ``quality_vs_k_text.png``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.studies.nested_tokens import save_figure, study_parser, t_interval, token_count_axis
from evaluation.studies.run_store import RunStore
from evaluation.studies.text_finetune import TextArm, TextTrainConfig, evaluate_text_model, finetune, text_tasks
from evaluation.studies.topology import load_config, text_pairs
from evaluation.study_output import checked_output

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
TOKEN_COUNTS = (1, 2, 4, 8, 16)
TOKEN_DIM = 24
TASKS = {"LocalSTSBenchmark": {}, "LocalSciFact": {"max_samples": 100, "corpus_size": 100}}
SMOKE_TASKS = {"LocalSTSBenchmark": {"max_samples": 16}, "LocalSciFact": {"max_samples": 4, "corpus_size": 8}}
OBLIQUE = TextArm("oblique16", "oblique", num_tokens=16, token_dim=TOKEN_DIM, scale=1.25)
SPHERE = TextArm("mean_mnrl", "mnrl", scale=20.0)
ARMS: dict[str, tuple[TextArm, str]] = {
    "oblique_plain": (OBLIQUE, "plain"),
    "oblique_nested": (OBLIQUE, "oblique_matryoshka"),
    "sphere_matryoshka": (SPHERE, "st_matryoshka"),
}


def wrap_loss(training: str):
    """The ``wrap_loss`` of :func:`~evaluation.studies.text_finetune.finetune` for one way of training."""
    if training == "plain":
        return None
    if training == "oblique_matryoshka":
        from st_oblique import ObliqueMatryoshkaLoss

        return lambda model, loss: ObliqueMatryoshkaLoss(model, loss, token_counts=list(TOKEN_COUNTS))
    if training == "st_matryoshka":
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

        dims = [k * TOKEN_DIM for k in reversed(TOKEN_COUNTS)]
        return lambda model, loss: MatryoshkaLoss(model, loss, matryoshka_dims=dims)
    raise ValueError(f"unknown training {training!r}")


def evaluate_at_k(model, name: str, tasks) -> dict[str, dict[str, float]]:
    """Main scores of ``model`` on ``tasks`` with its embeddings cut to k*24, for every k of TOKEN_COUNTS."""
    results = {}
    try:
        for k in TOKEN_COUNTS:
            model.truncate_dim = k * TOKEN_DIM
            scores = evaluate_text_model(model, f"{name}-k{k}", tasks)
            results[str(k)] = {task: float(metrics["main_score"]) for task, metrics in scores.items()}
    finally:
        model.truncate_dim = None
    return results


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds per arm, k and task, and the paired differences (same seeds) of the nested arm."""
    by_arm: dict[str, dict[int, dict]] = {}
    for record in records:
        by_arm.setdefault(record["spec"]["arm"], {})[record["spec"]["seed"]] = record
    tasks = sorted(next(iter(records))["metrics_at_k"]["1"]) if records else []
    summary: dict[str, Any] = {"tasks": tasks, "arms": {}, "paired": {}}
    for name, by_seed in by_arm.items():
        summary["arms"][name] = {
            str(k): {
                task: {
                    "mean": float(np.mean(values)),
                    "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    "n": len(values),
                }
                for task in tasks
                for values in [[r["metrics_at_k"][str(k)][task] for r in by_seed.values()]]
            }
            for k in TOKEN_COUNTS
        }
    for a, b in (("oblique_nested", "oblique_plain"), ("oblique_nested", "sphere_matryoshka")):
        if a not in by_arm or b not in by_arm:
            continue
        seeds = sorted(set(by_arm[a]) & set(by_arm[b]))
        summary["paired"][f"{a} - {b}"] = {
            str(k): {
                task: {"mean": float(np.mean(diffs)), "interval95": t_interval(diffs), "n": len(diffs)}
                for task in tasks
                for diffs in [
                    [
                        by_arm[a][s]["metrics_at_k"][str(k)][task] - by_arm[b][s]["metrics_at_k"][str(k)][task]
                        for s in seeds
                    ]
                ]
            }
            for k in TOKEN_COUNTS
        }
    return summary


def _cell(row: dict[str, Any], signed: bool = False) -> str:
    if not signed:
        return f"{100 * row['mean']:.1f} ± {100 * row['sd']:.1f}"
    text = f"{100 * row['mean']:+.1f}"
    interval = row["interval95"]
    if interval:
        text += f" [{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}]"
        if interval[0] > 0 or interval[1] < 0:
            text = f"**{text}**"
    return text


def write_report(summary: dict[str, Any], records: list[dict], folder: Path, command: str, machine: str) -> None:
    header = "| arm | " + " | ".join(f"k={k} ({k * TOKEN_DIM})" for k in TOKEN_COUNTS) + " |"
    rule = "|---|" + "---|" * len(TOKEN_COUNTS)
    seeds = max((row["1"][summary["tasks"][0]]["n"] for row in summary["arms"].values()), default=0)
    lines = [
        "# Quality vs number of tokens k (text: all-MiniLM-L6-v2 fine-tuned on 1280 pairs)",
        "",
        f"Generated by `{command}` (see the module docstring of `evaluation/studies/nested_tokens_text.py`). {machine}",
        "",
    ]
    for task in summary["tasks"]:
        lines += [
            f"## {task} main score (%), mean ± sd over {seeds} seeds; embedding size k·{TOKEN_DIM}",
            "",
            header,
            rule,
        ]
        for name in (n for n in ARMS if n in summary["arms"]):
            lines.append(
                f"| `{name}` | " + " | ".join(_cell(summary["arms"][name][str(k)][task]) for k in TOKEN_COUNTS) + " |"
            )
        lines += [
            "",
            "Paired differences (points), same seeds, mean [95% t-interval]; bold: excludes 0:",
            "",
            header.replace("arm", "difference"),
            rule,
        ]
        for name, rows in summary["paired"].items():
            lines.append(
                f"| `{name}` | " + " | ".join(_cell(rows[str(k)][task], signed=True) for k in TOKEN_COUNTS) + " |"
            )
        lines.append("")
    wall = sum(r["wall_seconds"] for r in records)
    cpu = sum(r["cpu_seconds"] for r in records)
    load = np.mean([np.mean(r["load_average_1min"]) for r in records]) if records else float("nan")
    lines += [
        f"Runs: {len(records)}; summed wall time {wall / 60:.1f} min, summed process CPU time {cpu / 60:.1f} min, "
        f"mean 1-minute load average {load:.1f} (other jobs shared the 2 cores).",
        "",
    ]
    (folder / "results.md").write_text("\n".join(lines), encoding="utf-8")


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib  # optional heavy dependency, only for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = summary["tasks"]
    figure, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for name in (n for n in ARMS if n in summary["arms"]):
            rows = [summary["arms"][name][str(k)][task] for k in TOKEN_COUNTS]
            axis.errorbar(
                TOKEN_COUNTS,
                [100 * r["mean"] for r in rows],
                yerr=[100 * r["sd"] for r in rows],
                marker="o",
                capsize=3,
                label=name,
            )
        token_count_axis(axis, f"{task.removeprefix('Local')} (%)", TOKEN_DIM)
    save_figure(figure, axes[0][0], path)


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(
        __doc__,
        "regime B",
        "evaluation/results/nested_tokens/text",
        list(ARMS),
        "tiny pairs and tasks, 1 seed (checks the pipeline)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    config = load_config(args.config, smoke=args.smoke)
    regime = config["regime_b"]
    shared = (ROOT / config["shared_dir"]).resolve()
    folder = checked_output(parser, args.output_dir, args.overwrite) / ("smoke" if args.smoke else "")
    seeds = [int(seed) for seed in args.seeds.split(",")][: 1 if args.smoke else None]
    task_settings = SMOKE_TASKS if args.smoke else TASKS
    train_config = TextTrainConfig(**regime["train"])
    model_path = str(shared / "weights" / regime["model"])
    store = RunStore(folder / "runs")
    cache: dict[str, Any] = {}

    def inputs():
        if not cache:
            cache["pairs"] = text_pairs(regime, shared)
            cache["tasks"] = text_tasks(task_settings, str(shared / "data"))
        return cache["pairs"], cache["tasks"]

    records = []
    for seed in seeds:
        for name in args.arms.split(","):
            arm, training = ARMS[name]
            spec = {
                "study": "nested_tokens_text",
                "arm": name,
                "arm_config": arm.spec(),
                "training": training,
                "seed": seed,
                "train": train_config.__dict__,
                "pairs": regime["pairs"],
                "tasks": task_settings,
                "token_counts": list(TOKEN_COUNTS),
            }

            def run(arm=arm, training=training, seed=seed, name=name) -> dict:
                pairs, tasks = inputs()
                model, info = finetune(arm, model_path, pairs, train_config, seed, wrap_loss=wrap_loss(training))
                start = time.monotonic()
                metrics = evaluate_at_k(model, f"nested-{name}-seed{seed}", tasks)
                return {**info, "metrics_at_k": metrics, "eval_seconds": time.monotonic() - start}

            record = store.get_or_run(spec, run)
            logger.info("%s seed %d: %s (%.0f s wall)", name, seed, record["metrics_at_k"], record["wall_seconds"])
            records.append(record)
    summary = summarize(records)
    machine = f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores, {args.threads} torch thread(s)."
    summary["environment"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    command = "python -m evaluation.studies.nested_tokens_text" + (" --smoke" if args.smoke else "")
    write_report(summary, records, folder, command, machine)
    plot(summary, folder / "quality_vs_k_text.png")
    print((folder / "results.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
