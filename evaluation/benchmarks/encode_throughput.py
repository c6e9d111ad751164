"""Encode throughput of the oblique MiniLM relative to plain all-MiniLM-L6-v2.

Compared in one process on the same STSb test sentences: the plain model (mean pooling), the oblique model
with K class tokens in the encoder (``token_source="first"``, the paper's design: K−1 extra positions per
text), the oblique model with an attention head on the unchanged encoder (``token_source="attention"``), and
the oblique model whose K class tokens join after the unchanged encoder (``token_source="class_attention"``, CaiT's
late class tokens) for each ``--class-attention LAYERSxWIDTH`` setting (a width equal to the encoder's, 384, starts
the blocks from its last layers). Runs alternate between the models so that load from other processes affects all
alike; read the ratios, not the absolute speeds. CPU-time speeds (``sentences_per_cpu_second``) are recorded too:
with ``--threads 1`` they are the steadiest measure on a shared machine.

    python evaluation/benchmarks/encode_throughput.py --model ../shared/weights/all-MiniLM-L6-v2 \
        --stsb ../shared/data/stsbenchmark/stsbenchmark/sts-test.csv --threads 1 \
        --class-attention 2x128 1x128 2x64 2x384 --output evaluation/results/benchmarks/encode_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer

import st_oblique

if __package__ in (None, ""):  # run as a script: the repository's evaluation package (its output rules) is importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from evaluation.study_output import add_overwrite_option, checked_output


def read_stsb_sentences(path: str, limit: int) -> list[str]:
    sentences: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            sentences += line.rstrip("\n").split("\t")[5:7]
    if len(sentences) < limit:
        raise SystemExit(f"{path} holds only {len(sentences)} sentences, fewer than --num-sentences {limit}.")
    return sentences[:limit]


def sentences_per_second(model: SentenceTransformer, sentences: list[str], batch_size: int) -> tuple[float, float]:
    """Sentences per second of wall time and per second of this process's CPU time.

    On a shared machine the wall-clock speed swings with other processes' load; the CPU-time speed measures the
    work itself (exact with ``--threads 1``; with more threads it also counts time spent spinning).
    """
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    model.encode(sentences, batch_size=batch_size, show_progress_bar=False)
    return len(sentences) / (time.perf_counter() - wall_start), len(sentences) / (time.process_time() - cpu_start)


def class_attention_setting(text: str) -> tuple[int, int]:
    """``"2x128"`` -> ``(2, 128)``: class-attention blocks and their width."""
    try:
        layers, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYERSxWIDTH such as 2x128, got {text!r}") from None
    return layers, width


def uptime() -> str:
    with open("/proc/loadavg", encoding="utf-8") as handle:
        return handle.read().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/weights/all-MiniLM-L6-v2", help="Hub id or path of all-MiniLM-L6-v2")
    parser.add_argument("--stsb", default="../shared/data/stsbenchmark/stsbenchmark/sts-test.csv")
    parser.add_argument("--num-sentences", type=int, default=1000)
    parser.add_argument("--num-tokens", type=int, default=16)
    parser.add_argument("--token-dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--class-attention",
        nargs="*",
        type=class_attention_setting,
        default=[(2, 128)],
        metavar="LAYERSxWIDTH",
        help="token_source='class_attention' settings to time (default: 2x128, the default head)",
    )
    parser.add_argument("--output", help="write the measurements as JSON here")
    add_overwrite_option(parser)
    args = parser.parse_args()
    if args.output:
        checked_output(parser, args.output, args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)

    sentences = read_stsb_sentences(args.stsb, args.num_sentences)
    plain = SentenceTransformer(args.model, device="cpu")
    models = {"plain": plain}
    for source in ("first", "attention"):
        models[f"oblique_{source}"] = st_oblique.oblique_text_model(
            args.model, num_tokens=args.num_tokens, token_dim=args.token_dim, token_source=source, device="cpu"
        )
    for layers, width in args.class_attention:
        models[f"oblique_class_attention_{layers}x{width}"] = st_oblique.oblique_text_model(
            args.model,
            num_tokens=args.num_tokens,
            token_dim=args.token_dim,
            token_source="class_attention",
            class_attention_layers=layers,
            class_attention_width=width,
            device="cpu",
        )
    for model in models.values():  # warm-up
        model.encode(sentences[:64], batch_size=args.batch_size)

    speeds: dict[str, list[float]] = {name: [] for name in models}
    cpu_speeds: dict[str, list[float]] = {name: [] for name in models}
    load_before, uptime_before = os.getloadavg()[0], uptime()
    for _ in range(args.repeats):
        for name, model in models.items():
            wall_speed, cpu_speed = sentences_per_second(model, sentences, args.batch_size)
            speeds[name].append(wall_speed)
            cpu_speeds[name].append(cpu_speed)

    result = {
        "command": shlex.join(["python", *sys.argv]),
        "machine": "shared: other sessions' jobs ran at the same time (see the load averages); compare the ratios",
        "uptime": {"before": uptime_before, "after": uptime()},
        "sentences": len(sentences),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "num_tokens": args.num_tokens,
        "token_dim": args.token_dim,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "sentences_per_second": {name: statistics.median(values) for name, values in speeds.items()},
        "sentences_per_cpu_second": {name: statistics.median(values) for name, values in cpu_speeds.items()},
        "runs": speeds,
        "runs_cpu": cpu_speeds,
    }
    for key, measure in (("relative_to_plain", "sentences_per_second"), ("cpu_relative_to_plain", "sentences_per_cpu_second")):
        plain_speed = result[measure]["plain"]
        result[key] = {name: speed / plain_speed for name, speed in result[measure].items() if name != "plain"}
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
