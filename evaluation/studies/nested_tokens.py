"""Quality vs number of tokens k: plain oblique training, ObliqueMatryoshkaLoss, and a sphere with ST's MatryoshkaLoss.

    python -m evaluation.studies.nested_tokens                 # 5 arms x 3 seeds, ~4 min CPU at 1 thread
    python -m evaluation.studies.nested_tokens --smoke         # 1 seed, 2 epochs, 1 minute

The topology study's regime A (:mod:`evaluation.studies.lit_heads`): LiT heads on the frozen EfficientNet-Lite0 /
all-MiniLM-L6-v2 token states cached by :mod:`evaluation.studies.tower_cache` (same split of Flickr8k-1k by image,
700/100/200, same PCA, same 30-epoch budget, clean captions), and the learning rates that study chose on its
validation split for the same heads (3e-3 for the oblique K=16 d=32 head, 1e-3 for the sphere head). Arms:

- ``oblique_plain``: K=16, d=32, ObliqueContrastiveLoss with the fixed scale 1 (the paper), trained at K only;
- ``oblique_nested``: the same head and loss inside :class:`st_oblique.ObliqueMatryoshkaLoss` (prefixes 1, 2, 4, 8,
  16 whole tokens, weights 1, matched logit range: prefix k scored by ``K/k`` times its sum of cosines);
- ``oblique_nested_raw``: the same with ``logit_range="raw"`` (prefix k scored by its plain sum of k cosines, in
  ``[-k, k]``), the ablation of that choice;
- ``sphere_matryoshka``: the CLIP head (K=1, d=512, one attention query, learnable temperature init 1/0.07, cap
  100) trained with Sentence Transformers' MatryoshkaLoss at the same sizes k*32 = 32, ..., 512: the symmetric
  InfoNCE of ST's own ``shrink`` (prefix, then global renormalization) at every size, summed with weight 1, i.e.
  what ``MatryoshkaLoss(model, loss, [512, 256, 128, 64, 32])`` computes;
- ``sphere_plain``: the same CLIP head trained at 512 only.

Every head is evaluated at k = 1, 2, 4, 8, 16 tokens (embedding size k*32): the oblique heads on their first k
tokens (the sum of k cosines, i.e. ``encode(truncate_dim=k*32)`` with ``similarity_fn_name="dot"``), the sphere
heads on their first k*32 dimensions renormalized (cosine, as ``truncate_dim`` with cosine similarity). Metrics on
the 200 test images and their 1000 captions: the mean of the six recalls (text->image and image->text R@1/5/10),
and zero-shot Imagenette top-1 (2000 images, 80 templates).

Writes ``--output-dir`` (default ``runs/evaluation/nested_tokens``; the committed ``evaluation/results/nested_tokens/``
only with ``--overwrite``): ``runs/*.json`` (one per arm and seed, reused when run again),
``results.md`` (mean ± sd over seeds per k; paired differences), ``summary.json`` and ``quality_vs_k.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers.sentence_transformer.losses.matryoshka import shrink
from torch import Tensor

from evaluation.studies.lit_heads import (
    RECALL_KEYS,
    Arm,
    LitData,
    TrainConfig,
    build_loss,
    embed,
    train_head,
)
from evaluation.studies.run_store import RunStore
from evaluation.studies.splits import CaptionTable, noisy_caption_table
from evaluation.studies.topology import load_config, prepare_lit_data
from evaluation.study_output import add_output_option, checked_output
from st_oblique import ObliqueMatryoshkaLoss, manifold
from st_oblique.evaluation.classification import classification_metrics, zeroshot_logits
from st_oblique.evaluation.retrieval import retrieval_metrics, retrieval_scores
from st_oblique.losses.contrastive import DIRECTIONS, info_nce_row_losses

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
TOKEN_COUNTS = (1, 2, 4, 8, 16)
TOKEN_DIM = 32
OBLIQUE = Arm("oblique16_fixed1", 16, 32, "attention", 1.0, description="K=16 d=32, fixed scale 1")
SPHERE = Arm("sphere_attention", 1, 512, "attention", 14.285714, True, 100.0, "CLIP head, learnable temperature")
ARMS: dict[str, tuple[Arm, str, float]] = {
    # name: (head, how it is trained, learning rate chosen by the topology study for this head)
    "oblique_plain": (OBLIQUE, "plain", 3e-3),
    "oblique_nested": (OBLIQUE, "oblique_matryoshka", 3e-3),
    "oblique_nested_raw": (OBLIQUE, "oblique_matryoshka_raw", 3e-3),
    "sphere_matryoshka": (SPHERE, "st_matryoshka", 1e-3),
    "sphere_plain": (SPHERE, "plain", 1e-3),
}


def make_objective(arm: Arm, training: str, head) -> tuple[Callable[[Tensor, Tensor], Tensor], Any]:
    """The loss of (image, text) embeddings for one arm, and the st-oblique loss that holds its scale."""
    loss = build_loss(head, arm)
    if training == "plain":
        return lambda images, texts: loss.compute_loss_from_embeddings([images, texts]), loss
    if training in ("oblique_matryoshka", "oblique_matryoshka_raw"):
        logit_range = "raw" if training.endswith("_raw") else "matched"
        nested = ObliqueMatryoshkaLoss(head, loss, token_counts=list(TOKEN_COUNTS), logit_range=logit_range)
        return lambda images, texts: nested.compute_loss_from_embeddings([images, texts]), loss
    if training == "st_matryoshka":
        dims = [k * TOKEN_DIM for k in TOKEN_COUNTS]

        def st_matryoshka(images: Tensor, texts: Tensor) -> Tensor:
            rows = torch.arange(images.shape[0])
            scale = loss.similarity_scale()
            return sum(
                info_nce_row_losses(shrink(images, dim), shrink(texts, dim), rows, scale, DIRECTIONS).mean()
                for dim in dims
            )

        return st_matryoshka, loss
    raise ValueError(f"unknown training {training!r}")


def train(arm: Arm, training: str, data: LitData, table: CaptionTable, config: TrainConfig, seed: int, lr: float):
    """lit_heads.train_head (AdamW, warmup + cosine, the same batches for every arm of a seed) with the arm's
    objective."""
    return train_head(
        arm, data, table, config, seed, lr, objective_for=lambda head: make_objective(arm, training, head)
    )


def evaluate_at_k(head, data: LitData, split: str = "test") -> dict[str, dict[str, float]]:
    """Retrieval and zero-shot metrics of the head's embeddings cut to k*32, for every k of TOKEN_COUNTS."""
    num_tokens = head.num_tokens
    images = data.splits[split]
    caption_ids = np.array([caption for image in images for caption in data.captions_of[int(image)]])
    owner = {int(image): position for position, image in enumerate(images)}
    caption_image = torch.tensor([owner[int(data.caption_owner[c])] for c in caption_ids])
    image_embeddings = embed(head, "image", data.image_tokens[images])
    text_embeddings = embed(head, "text", data.text_tokens[caption_ids], data.text_mask[caption_ids])
    prompts = embed(head, "text", data.zs_prompt_tokens, data.zs_prompt_mask)
    zs_images = embed(head, "image", data.zs_image_tokens)
    results = {}
    for k in TOKEN_COUNTS:
        size = k * TOKEN_DIM
        # oblique: the first k unit tokens; sphere: the first k*32 dimensions, renormalized (one "token")
        tokens = k if num_tokens > 1 else 1
        scores = retrieval_scores(text_embeddings[:, :size], image_embeddings[:, :size], tokens)
        metrics = retrieval_metrics(scores, caption_image)
        metrics["mean_recall"] = float(np.mean([metrics[key] for key in RECALL_KEYS]))
        classifier = torch.stack(
            [
                manifold.token_mean(prompts[data.zs_prompt_class == label, :size], dim=0, num_tokens=tokens)
                for label in range(len(data.classnames))
            ]
        )
        logits = zeroshot_logits(zs_images[:, :size], classifier, tokens)
        metrics.update(classification_metrics(logits, data.zs_labels, len(data.classnames)))
        results[str(k)] = metrics
    return results


def run(arm_name: str, data: LitData, table: CaptionTable, config: TrainConfig, seed: int) -> dict[str, Any]:
    arm, training, lr = ARMS[arm_name]
    start = time.monotonic()
    head, loss, history = train(arm, training, data, table, config, seed, lr)
    train_seconds = time.monotonic() - start
    return {
        "metrics_at_k": evaluate_at_k(head, data),
        "final_scale": loss.scale,
        "history": history,
        "train_seconds": train_seconds,
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds per arm and k, and the paired differences (same seeds) of the nested arm."""
    by_arm: dict[str, list[dict]] = {}
    for record in records:
        by_arm.setdefault(record["spec"]["arm"], []).append(record)
    summary: dict[str, Any] = {"arms": {}, "paired": {}}
    for name, group in by_arm.items():
        summary["arms"][name] = {
            str(k): {
                metric: {
                    "mean": float(np.mean([r["metrics_at_k"][str(k)][metric] for r in group])),
                    "sd": float(np.std([r["metrics_at_k"][str(k)][metric] for r in group], ddof=1))
                    if len(group) > 1
                    else 0.0,
                    "n": len(group),
                }
                for metric in ("mean_recall", "acc1")
            }
            for k in TOKEN_COUNTS
        }
    pairs = (
        ("oblique_nested", "oblique_plain"),
        ("oblique_nested", "oblique_nested_raw"),
        ("oblique_nested", "sphere_matryoshka"),
    )
    for a, b in pairs:
        if a not in by_arm or b not in by_arm:
            continue
        seeds_a = {r["spec"]["seed"]: r for r in by_arm[a]}
        seeds_b = {r["spec"]["seed"]: r for r in by_arm[b]}
        seeds = sorted(set(seeds_a) & set(seeds_b))
        rows = {}
        for k in TOKEN_COUNTS:
            diffs = [
                seeds_a[s]["metrics_at_k"][str(k)]["mean_recall"] - seeds_b[s]["metrics_at_k"][str(k)]["mean_recall"]
                for s in seeds
            ]
            rows[str(k)] = {"mean": float(np.mean(diffs)), "interval95": t_interval(diffs), "n": len(diffs)}
        summary["paired"][f"{a} - {b}"] = rows
    return summary


def t_interval(values: list[float]) -> list[float] | None:
    """The 95% t-interval of the mean (None for fewer than 2 values)."""
    if len(values) < 2:
        return None
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}.get(len(values), 2.0)
    half = t * float(np.std(values, ddof=1)) / np.sqrt(len(values))
    return [float(np.mean(values)) - half, float(np.mean(values)) + half]


def write_report(summary: dict[str, Any], records: list[dict], folder: Path, command: str) -> None:
    arms = [name for name in ARMS if name in summary["arms"]]
    lines = [
        "# Quality vs number of tokens k (Flickr8k-1k test retrieval, LiT heads)",
        "",
        f"Generated by `{command}` (see the module docstring of `evaluation/studies/nested_tokens.py`).",
        "",
        "Mean of the six retrieval recalls (%) on the 200 test images / 1000 captions, mean ± sd over "
        f"{max(g['1']['mean_recall']['n'] for g in summary['arms'].values())} seeds; embedding size k·32.",
        "",
        "| arm | " + " | ".join(f"k={k} ({k * TOKEN_DIM})" for k in TOKEN_COUNTS) + " |",
        "|---|" + "---|" * len(TOKEN_COUNTS),
    ]
    for name in arms:
        cells = [
            f"{100 * summary['arms'][name][str(k)]['mean_recall']['mean']:.1f} ± "
            f"{100 * summary['arms'][name][str(k)]['mean_recall']['sd']:.1f}"
            for k in TOKEN_COUNTS
        ]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Zero-shot Imagenette top-1 (%), same heads and cuts:",
        "",
        "| arm | " + " | ".join(f"k={k}" for k in TOKEN_COUNTS) + " |",
        "|---|" + "---|" * len(TOKEN_COUNTS),
    ]
    for name in arms:
        cells = [
            f"{100 * summary['arms'][name][str(k)]['acc1']['mean']:.1f} ± {100 * summary['arms'][name][str(k)]['acc1']['sd']:.1f}"
            for k in TOKEN_COUNTS
        ]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    if summary["paired"]:
        lines += [
            "",
            "Paired differences of the mean recall (points), same seeds, mean [95% t-interval]:",
            "",
            "| difference | " + " | ".join(f"k={k}" for k in TOKEN_COUNTS) + " |",
            "|---|" + "---|" * len(TOKEN_COUNTS),
        ]
        for name, rows in summary["paired"].items():
            cells = []
            for k in TOKEN_COUNTS:
                row = rows[str(k)]
                interval = row["interval95"]
                text = f"{100 * row['mean']:+.1f}"
                if interval:
                    text += f" [{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}]"
                    if interval[0] > 0 or interval[1] < 0:
                        text = f"**{text}**"
                cells.append(text)
            lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    cpu = sum(r["cpu_seconds"] for r in records)
    lines += ["", f"Total CPU time of the runs: {cpu / 60:.1f} min ({len(records)} runs, 1 torch thread).", ""]
    (folder / "results.md").write_text("\n".join(lines), encoding="utf-8")


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib  # optional heavy dependency, only for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in ARMS:
        if name not in summary["arms"]:
            continue
        for axis, metric in zip(axes, ("mean_recall", "acc1"), strict=True):
            means = [100 * summary["arms"][name][str(k)][metric]["mean"] for k in TOKEN_COUNTS]
            sds = [100 * summary["arms"][name][str(k)][metric]["sd"] for k in TOKEN_COUNTS]
            axis.errorbar(TOKEN_COUNTS, means, yerr=sds, marker="o", capsize=3, label=name)
    for axis, title in zip(axes, ("Flickr8k-1k test: mean recall (%)", "Imagenette zero-shot top-1 (%)"), strict=True):
        token_count_axis(axis, title, TOKEN_DIM)
    save_figure(figure, axes[0], path)


def token_count_axis(axis, title: str, token_dim: int) -> None:
    """An x axis of token counts k (log 2), labelled with the embedding size k * token_dim."""
    axis.set_xscale("log", base=2)
    axis.set_xticks(TOKEN_COUNTS, [f"{k}\n({k * token_dim})" for k in TOKEN_COUNTS])
    axis.set_xlabel("tokens k (embedding size)")
    axis.set_title(title)
    axis.grid(alpha=0.3)


def save_figure(figure, legend_axis, path: Path) -> None:
    import matplotlib.pyplot as plt  # optional heavy dependency, only for the figure

    legend_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def study_parser(doc: str, regime: str, output_dir: str, arms: list[str], smoke_help: str) -> argparse.ArgumentParser:
    """The options both nested-tokens studies take (images: regime A settings; text: regime B settings).

    ``output_dir``: the committed results (``evaluation/results/...``); the default ``--output-dir`` is the same path
    under ``runs/`` (see :mod:`evaluation.study_output`), the committed one needs ``--overwrite``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "evaluation/studies/topology.yaml"), help=f"{regime} settings")
    add_output_option(parser, output_dir.removeprefix("evaluation/results/"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default=",".join(arms))
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(
        __doc__, "regime A", "evaluation/results/nested_tokens", list(ARMS), "1 seed, 2 epochs (checks the pipeline)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    regime = config["regime_a"]
    shared = (ROOT / config["shared_dir"]).resolve()
    folder = checked_output(parser, args.output_dir, args.overwrite)
    train_config = TrainConfig(**regime["train"])
    seeds = [int(seed) for seed in args.seeds.split(",")]
    if args.smoke:
        train_config.epochs, seeds = 2, seeds[:1]
        folder = folder / "smoke"
    store = RunStore(folder / "runs")
    timings: dict[str, Any] = {}
    data_cache: dict[str, Any] = {}

    def data() -> tuple[LitData, CaptionTable]:
        if not data_cache:
            lit = prepare_lit_data(regime, shared, config.get("cache_dir"), timings)
            data_cache["lit"] = lit
            data_cache["table"] = noisy_caption_table(lit.captions, lit.splits["train"], 0.0, regime["noise_seed"])
        return data_cache["lit"], data_cache["table"]

    records = []
    for seed in seeds:
        for name in args.arms.split(","):
            arm, training, lr = ARMS[name]
            spec = {
                "study": "nested_tokens",
                "arm": name,
                "head": arm.spec(),
                "training": training,
                "learning_rate": lr,
                "seed": seed,
                "train": train_config.__dict__,
                "token_counts": list(TOKEN_COUNTS),
                "split": regime["split"],
                "pca_dim": regime["pca_dim"],
            }
            record = store.get_or_run(spec, lambda name=name, seed=seed: run(name, *data(), train_config, seed))
            logger.info(
                "%s seed %d: mean recall by k %s (%.0f s CPU)",
                name,
                seed,
                {k: round(100 * v["mean_recall"], 1) for k, v in record["metrics_at_k"].items()},
                record["cpu_seconds"],
            )
            records.append(record)
    summary = summarize(records)
    summary["environment"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads}
    command = "python -m evaluation.studies.nested_tokens" + (" --smoke" if args.smoke else "")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    write_report(summary, records, folder, command)
    plot(summary, folder / "quality_vs_k.png")
    print((folder / "results.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
