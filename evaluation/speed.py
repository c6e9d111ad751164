"""Images per second of the harness's zero-shot classification vs CLIP_benchmark's own loop, in one process.

Both run on the same model, images, class names, templates, batch size and DataLoader workers:

- the harness: :func:`st_oblique.evaluation.zeroshot_classification` (prompts in one length-sorted
  ``model.encode`` call; images decoded and preprocessed in DataLoader workers);
- CLIP_benchmark: ``clip_benchmark.metrics.zeroshot_classification.evaluate`` (one text batch per class; its
  DataLoader applies the model's preprocessing as the transform) on the model seen through
  :class:`~st_oblique.evaluation.clip_benchmark_adapter.CLIPBenchmarkModel`, with ``amp=False`` (float32 like
  the harness; CLIP_benchmark's default bf16 autocast would change numbers).

After a warm-up of both (text and one image batch), timed runs alternate in ABBA order (harness, CLIP_benchmark,
CLIP_benchmark, harness, ...) so that load from other processes and drift hit both alike. Images/s come from the
median time of each (the best times are reported too). For K=1 models the metrics must be identical; for oblique models (K>1) they
differ by design (CLIP_benchmark renormalizes the whole ensemble vector, the harness each token).

    python -m evaluation.speed --model lit=/tmp/lit-untrained --dataset imagenette --data-root ../shared/data \\
        --max-samples 512 --repeats 2 --num-workers 1 --output evaluation/results/speed/lit_imagenette.json

Needs ``pip install clip-benchmark`` (in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from evaluation.study_output import add_overwrite_option, checked_output
from st_oblique.data.datasets import ClassificationDataset, load_dataset
from st_oblique.data.datasets.base import SubsetView
from st_oblique.evaluation.classification import zeroshot_classification
from st_oblique.evaluation.clip_benchmark_adapter import CLIPBenchmarkModel, clip_benchmark_numpy2_fix
from st_oblique.evaluation.encoding import embedding_num_tokens
from st_oblique.evaluation.identity import weights_fingerprint
from st_oblique.evaluation.model_loading import load_model, parse_model_spec
from st_oblique.evaluation.runner import resolve_templates

__all__ = ["clip_benchmark_zeroshot", "compare_speed", "main"]


class _TransformedImages(Dataset):
    """(pixels, label) pairs as CLIP_benchmark's torchvision-style datasets give them; ``classes`` as it expects."""

    def __init__(self, data: ClassificationDataset, transform) -> None:
        self.data, self.transform, self.classes = data, transform, data.classnames

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.data.images[index]), self.data.labels[index]


def clip_benchmark_zeroshot(model, data: ClassificationDataset, templates, batch_size: int, num_workers: int) -> dict:
    """CLIP_benchmark's zero-shot classification of ``model`` on ``data`` (its code, unchanged but for NumPy 2)."""
    from clip_benchmark.metrics import zeroshot_classification as clip_benchmark_classification

    adapter = CLIPBenchmarkModel(model)
    loader = DataLoader(_TransformedImages(data, adapter.transform), batch_size=batch_size, num_workers=num_workers)
    with clip_benchmark_numpy2_fix(), torch.no_grad():
        return clip_benchmark_classification.evaluate(
            adapter, loader, adapter.tokenizer, data.classnames, list(templates), model.device.type, amp=False
        )


def compare_speed(
    model, data: ClassificationDataset, templates, *, batch_size: int = 64, num_workers: int = 0, repeats: int = 4
) -> dict[str, Any]:
    """Time both implementations ``repeats`` times each (ABBA order); returns images/s (median and best run), their
    ratios and both implementations' metrics."""
    timings: dict[str, list[float]] = {"harness": [], "clip_benchmark": []}
    metrics: dict[str, dict] = {}
    runs = {
        "harness": lambda: zeroshot_classification(
            model,
            data.images,
            data.labels,
            data.classnames,
            templates,
            batch_size=batch_size,
            num_workers=num_workers,
            show_progress_bar=False,
        ),
        "clip_benchmark": lambda: clip_benchmark_zeroshot(model, data, templates, batch_size, num_workers),
    }
    model.encode(["warm-up"])
    head = range(min(batch_size, len(data)))
    warm_up = ClassificationDataset(
        "warm-up", SubsetView(data.images, head), [data.labels[i] for i in head], data.classnames
    )
    warm_up_templates = templates if isinstance(templates, Mapping) else list(templates)[:1]
    zeroshot_classification(
        model, warm_up.images, warm_up.labels, warm_up.classnames, warm_up_templates, batch_size=batch_size
    )
    clip_benchmark_zeroshot(model, warm_up, warm_up_templates, batch_size, 0)
    for repeat in range(repeats):
        for name in list(runs)[:: 1 if repeat % 2 == 0 else -1]:
            start = time.perf_counter()
            metrics[name] = runs[name]()
            timings[name].append(time.perf_counter() - start)
    speed = {name: len(data) / statistics.median(times) for name, times in timings.items()}
    best = {name: len(data) / min(times) for name, times in timings.items()}
    return {
        "images_per_second": speed,
        "ratio_harness_over_clip_benchmark": speed["harness"] / speed["clip_benchmark"],
        "images_per_second_best_run": best,
        "ratio_best_runs": best["harness"] / best["clip_benchmark"],
        "seconds": timings,
        "metrics": metrics,
        "metrics_identical": all(
            value == metrics["clip_benchmark"][key]
            or (math.isnan(value) and math.isnan(metrics["clip_benchmark"][key]))
            for key, value in metrics["harness"].items()
        ),
    }


def _load_average() -> list[float] | None:
    return [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else None


def add_speed_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, metavar="[NAME=]PATH")
    parser.add_argument("--dataset", required=True, help="a zero-shot classification dataset (see `list`)")
    parser.add_argument("--dataset-path")
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--max-samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--template", action="append", dest="templates", help="default: OpenAI's 80 templates")
    parser.add_argument("--device")
    parser.add_argument("--output", type=Path, help="JSON file for the measurement")
    add_overwrite_option(parser)
    return parser


def speed_from_args(args: argparse.Namespace) -> dict[str, Any]:
    name, path = parse_model_spec(args.model)
    model = load_model(path, device=args.device)
    data = load_dataset(args.dataset, args.dataset_path, data_root=args.data_root, max_samples=args.max_samples)
    if not isinstance(data, ClassificationDataset):
        raise ValueError(f"{args.dataset} is a retrieval dataset; the speed check uses zero-shot classification.")
    templates = resolve_templates(data, args.templates)
    load_before = _load_average()
    measurement = compare_speed(
        model, data, templates, batch_size=args.batch_size, num_workers=args.num_workers, repeats=args.repeats
    )
    report = {
        "model": name,
        "pretrained": weights_fingerprint(model),
        "num_tokens": embedding_num_tokens(model),
        "dataset": data.name,
        "num_images": len(data),
        "num_templates": len(templates),
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "torch_threads": torch.get_num_threads(),
        # other processes' load shows in both timings alike (ABBA order); kept to judge how noisy they are
        "load_average_1_5_15min": {"before": load_before, "after": _load_average()},
        **measurement,
        "command": getattr(args, "command_line", None),
    }
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    print(text)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m evaluation.speed ...``: parse ``argv`` and run the measurement."""
    parser = argparse.ArgumentParser(prog="python -m evaluation.speed", description=__doc__.split("\n")[0])
    args = add_speed_arguments(parser).parse_args(argv)
    if args.output:
        checked_output(parser, args.output, args.overwrite)
    args.command_line = shlex.join(["python", "-m", "evaluation.speed", *(sys.argv[1:] if argv is None else argv)])
    return speed_from_args(args)


if __name__ == "__main__":
    main()
