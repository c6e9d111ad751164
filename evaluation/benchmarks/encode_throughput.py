"""Encode throughput of the oblique MiniLM relative to plain all-MiniLM-L6-v2.

Compared in one process on the same STSb test sentences: the plain model (mean pooling), the oblique model
with K class tokens in the encoder (``token_source="first"``, the paper's design: K−1 extra positions per
text) and, to separate the cost of the extra positions from the cost of the head, the oblique model with an
attention head on the unchanged encoder (``token_source="attention"``). Runs alternate between the models so
that load from other processes affects all alike; read the ratios, not the absolute speeds.

    python evaluation/benchmarks/encode_throughput.py --model ../shared/weights/all-MiniLM-L6-v2 \
        --stsb ../shared/data/stsbenchmark/stsbenchmark/sts-test.csv
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from sentence_transformers import SentenceTransformer

import st_oblique


def read_stsb_sentences(path: str, limit: int) -> list[str]:
    sentences: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            sentences += line.rstrip("\n").split("\t")[5:7]
    if len(sentences) < limit:
        raise SystemExit(f"{path} holds only {len(sentences)} sentences, fewer than --num-sentences {limit}.")
    return sentences[:limit]


def sentences_per_second(model: SentenceTransformer, sentences: list[str], batch_size: int) -> float:
    start = time.perf_counter()
    model.encode(sentences, batch_size=batch_size, show_progress_bar=False)
    return len(sentences) / (time.perf_counter() - start)


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
    parser.add_argument("--output", help="write the measurements as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    sentences = read_stsb_sentences(args.stsb, args.num_sentences)
    plain = SentenceTransformer(args.model, device="cpu")
    models = {"plain": plain}
    for source in ("first", "attention"):
        models[f"oblique_{source}"] = st_oblique.oblique_text_model(
            args.model, num_tokens=args.num_tokens, token_dim=args.token_dim, token_source=source, device="cpu"
        )
    for model in models.values():  # warm-up
        model.encode(sentences[:64], batch_size=args.batch_size)

    speeds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            speeds[name].append(sentences_per_second(model, sentences, args.batch_size))

    result = {
        "sentences": len(sentences),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "num_tokens": args.num_tokens,
        "token_dim": args.token_dim,
        "sentences_per_second": {name: statistics.median(values) for name, values in speeds.items()},
        "runs": speeds,
    }
    plain_speed = result["sentences_per_second"]["plain"]
    result["relative_to_plain"] = {
        name: speed / plain_speed for name, speed in result["sentences_per_second"].items() if name != "plain"
    }
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
