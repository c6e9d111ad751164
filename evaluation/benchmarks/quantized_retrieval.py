"""Recall@10 retention of int8 and binary indexes vs float32, for an oblique model (K=16, d=32) and its sphere
baseline at the same 512 floats, on Flickr8k-1k text->image retrieval and SciFact; plus index size and query latency.

    python -m evaluation.benchmarks.quantized_retrieval                 # ~10 min on 2 shared CPU cores, 1 thread
    python -m evaluation.benchmarks.quantized_retrieval --smoke         # tiny subsets, < 2 min

The models are the LiT-style heads of the topology study (:mod:`evaluation.studies.lit_heads`: st-oblique's
``ObliquePooling`` trained with ``ObliqueContrastiveLoss`` on cached token states of the frozen ``../shared`` towers,
PCA-reduced to 128): ``oblique16`` = K=16 tokens of d=32 with attention pooling and scale 1 (the study's
``oblique16_fixed1``), ``sphere512`` = one 512-d unit vector with the same pooling and the same logit range, scale 16
(``sphere_fixed16``), each at the learning rate the study selected for it.

- Flickr8k-1k: the study's split (700 train / 100 val / 200 test images), 30 epochs; the index holds the 200 test
  images, the queries are their 1,000 captions (one relevant image each).
- SciFact (BEIR): heads trained on the 920 train (claim, abstract) pairs (10 epochs of 64); the index holds the
  test claims' abstracts plus random others (``--scifact-corpus`` documents in all), the queries are the test claims;
  documents are cut to their first ``--max-words`` words, so the frozen text tower stays affordable on a CPU.

Every index is a usearch index searched exactly (brute force): float32 with metric ``ip`` (score = sum of the K
cosines), int8 with ``ip`` (per-dimension buckets calibrated on the training side's embeddings, sentence-transformers'
``quantize_embeddings``), binary (sign bits, ``hamming``). Queries are quantized like the corpus; "rescored" re-ranks
the top 40 of the quantized search with the float32 query (sentence-transformers' ``semantic_search_usearch``).
Recall@10 is the share of a query's relevant documents found in its top 10 (Flickr: 1 relevant image per caption).
Writes ``results.json`` and ``results.md`` to ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_usearch
from usearch.index import Index

from evaluation.studies.lit_heads import Arm, TrainConfig, apply_pca, build_head, build_loss, embed, fit_pca, train_head
from evaluation.studies.splits import noisy_caption_table
from evaluation.studies.topology import environment, prepare_lit_data
from evaluation.studies.tower_cache import TowerCache
from evaluation.study_output import add_output_option, checked_output

logger = logging.getLogger("evaluation.benchmarks.quantized_retrieval")

TOP_K = 10
RESCORE_MULTIPLIER = 4
ARMS = {
    "oblique16": (Arm("oblique16", num_tokens=16, token_dim=32, token_source="attention", scale=1.0), 0.003),
    "sphere512": (Arm("sphere512", num_tokens=1, token_dim=512, token_source="attention", scale=16.0), 0.001),
}
"""name -> (head design, learning rate): the topology study's oblique16_fixed1 and sphere_fixed16 at their selected
learning rates (evaluation/results/topology/runs)."""
PRECISIONS = ("float32", "int8", "binary")


@dataclass
class RetrievalSet:
    """Embeddings of one task for one model: queries, the indexed corpus, the relevant corpus ids per query, and
    embeddings of the training side used to calibrate the int8 buckets."""

    queries: np.ndarray
    corpus: np.ndarray
    relevant: list[set[int]]
    calibration: np.ndarray


def flickr_sets(shared: Path, cache_dir: str | None, smoke: bool) -> dict[str, RetrievalSet]:
    """Train both heads on Flickr8k-1k's training images and embed the test split (captions -> images)."""
    config = {
        "image_tower": "tf_efficientnet_lite0",
        "text_tower": "all-MiniLM-L6-v2",
        "max_images": 60 if smoke else None,
        "split": {
            "seed": 0,
            "sizes": {"train": 40, "val": 10, "test": 10} if smoke else {"train": 700, "val": 100, "test": 200},
        },
        "imagenette_samples": 10,  # prepare_lit_data also reads a zero-shot set; not used here
        "num_templates": 1,
        "pca_dim": {"image": 32 if smoke else 128, "text": 32 if smoke else 128},
    }
    data = prepare_lit_data(config, shared, cache_dir, {})
    train = TrainConfig(epochs=1 if smoke else 30, batch_size=16 if smoke else 128, log_every=5)
    table = noisy_caption_table(data.captions, data.splits["train"], 0.0, 1234)
    test_images = data.splits["test"]
    caption_ids = np.array([c for image in test_images for c in data.captions_of[int(image)]])
    position = {int(image): i for i, image in enumerate(test_images)}
    relevant = [{position[int(data.caption_owner[c])]} for c in caption_ids]
    sets = {}
    for name, (arm, learning_rate) in ARMS.items():
        start = time.monotonic()
        head, _, _ = train_head(arm, data, table, train, seed=0, learning_rate=learning_rate)
        sets[name] = RetrievalSet(
            queries=embed(head, "text", data.text_tokens[caption_ids], data.text_mask[caption_ids]).numpy(),
            corpus=embed(head, "image", data.image_tokens[test_images]).numpy(),
            relevant=relevant,
            calibration=embed(head, "image", data.image_tokens[data.splits["train"]]).numpy(),
        )
        logger.info("Flickr8k-1k %s trained in %.0f s", name, time.monotonic() - start)
    return sets


def scifact_sets(
    shared: Path, cache_dir: str | None, smoke: bool, corpus_size: int, max_words: int
) -> dict[str, RetrievalSet]:
    """Train both heads on SciFact's train pairs (frozen all-MiniLM-L6-v2 token states) and embed the test side."""
    root = shared / "data" / "scifact_beir"
    documents = {row["_id"]: f"{row.get('title', '')}. {row['text']}" for row in _jsonl(root / "corpus.jsonl")}
    claims = {row["_id"]: row["text"] for row in _jsonl(root / "queries.jsonl")}
    train_pairs, test_qrels = _qrels(root / "qrels" / "train.tsv"), _qrels(root / "qrels" / "test.tsv")
    if smoke:
        train_pairs, test_qrels = train_pairs[:48], test_qrels[:12]
        corpus_size = 40
    test_claims = sorted({claim for claim, _ in test_qrels})
    relevant_docs = sorted({doc for _, doc in test_qrels})
    rng = np.random.default_rng(0)
    others = [doc for doc in sorted(documents) if doc not in set(relevant_docs)]
    corpus_ids = relevant_docs + list(rng.choice(others, size=max(0, corpus_size - len(relevant_docs)), replace=False))
    train_docs = sorted({doc for _, doc in train_pairs})
    train_claims = sorted({claim for claim, _ in train_pairs})

    def cut(text: str) -> str:
        return " ".join(text.split()[:max_words])

    cache = TowerCache(shared / "weights" / "all-MiniLM-L6-v2", shared / "weights" / "tf_efficientnet_lite0", cache_dir)
    doc_texts = [cut(documents[doc]) for doc in [*corpus_ids, *train_docs]]
    claim_texts = [claims[claim] for claim in [*test_claims, *train_claims]]
    doc_tokens, doc_mask = cache.text_tokens(f"scifact-docs-{max_words}w", doc_texts)
    claim_tokens, claim_mask = cache.text_tokens("scifact-claims", claim_texts)
    dim = 32 if smoke else 128
    fit_tokens = torch.cat(
        [
            _pad(doc_tokens[len(corpus_ids) :], doc_tokens.shape[1]),
            _pad(claim_tokens[len(test_claims) :], doc_tokens.shape[1]),
        ]
    )
    fit_mask = torch.cat(
        [
            _pad(doc_mask[len(corpus_ids) :], doc_tokens.shape[1]),
            _pad(claim_mask[len(test_claims) :], doc_tokens.shape[1]),
        ]
    )
    mean, components, _ = fit_pca(fit_tokens, fit_mask, dim)  # fitted on the training side only
    doc_tokens, claim_tokens = apply_pca(doc_tokens, mean, components), apply_pca(claim_tokens, mean, components)

    doc_row = {doc: len(corpus_ids) + i for i, doc in enumerate(train_docs)}
    claim_row = {claim: len(test_claims) + i for i, claim in enumerate(train_claims)}
    pairs = np.array([(claim_row[claim], doc_row[doc]) for claim, doc in train_pairs])
    corpus_position = {doc: i for i, doc in enumerate(corpus_ids)}
    relevant = [{corpus_position[doc] for c, doc in test_qrels if c == claim} for claim in test_claims]
    sets = {}
    for name, (arm, learning_rate) in ARMS.items():
        start = time.monotonic()
        head = _train_text_head(
            arm,
            {"text": dim},
            claim_tokens,
            claim_mask,
            doc_tokens,
            doc_mask,
            pairs,
            learning_rate,
            epochs=1 if smoke else 10,
            batch_size=16 if smoke else 64,
        )
        sets[name] = RetrievalSet(
            queries=embed(head, "text", claim_tokens[: len(test_claims)], claim_mask[: len(test_claims)]).numpy(),
            corpus=embed(head, "text", doc_tokens[: len(corpus_ids)], doc_mask[: len(corpus_ids)]).numpy(),
            relevant=relevant,
            calibration=embed(head, "text", doc_tokens[len(corpus_ids) :], doc_mask[len(corpus_ids) :]).numpy(),
        )
        logger.info("SciFact %s trained in %.0f s", name, time.monotonic() - start)
    return sets


def _train_text_head(
    arm, widths, query_tokens, query_mask, doc_tokens, doc_mask, pairs, learning_rate, epochs, batch_size
):
    """One shared text head for claims and abstracts, trained with ObliqueContrastiveLoss (AdamW, constant rate)."""
    torch.manual_seed(0)
    head = build_head(arm, widths)
    loss = build_loss(head, arm)
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=0.1)
    rng = np.random.default_rng(0)
    head.train()
    for _ in range(epochs):
        order = pairs[rng.permutation(len(pairs))]
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[start : start + batch_size]
            queries = head(_text_features(query_tokens[batch[:, 0]], query_mask[batch[:, 0]]))["sentence_embedding"]
            docs = head(_text_features(doc_tokens[batch[:, 1]], doc_mask[batch[:, 1]]))["sentence_embedding"]
            value = loss.compute_loss_from_embeddings([queries, docs])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
    return head


def _text_features(tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    length = int(mask.sum(1).max())
    return {
        "modality": "text",
        "token_embeddings": tokens[:, :length].float(),
        "attention_mask": mask[:, :length].long(),
    }


def _pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    pad = [0, 0] * (tensor.ndim - 2) + [0, length - tensor.shape[1]]
    return torch.nn.functional.pad(tensor, pad)


def measure(data: RetrievalSet, repeats: int = 5) -> list[dict[str, Any]]:
    """Recall@10 (plain and rescored), index size and query latency of each precision."""
    rows = []
    for precision in PRECISIONS:
        index, corpus_precision, ranges = _index(data, precision)
        with tempfile.TemporaryDirectory() as folder:
            index.save(os.path.join(folder, "index.usearch"))
            index_bytes = os.path.getsize(os.path.join(folder, "index.usearch"))
        queries = (
            data.queries
            if precision == "float32"
            else quantize_embeddings(data.queries, _query_precision(precision), ranges=ranges)
        )
        seconds = []
        for _ in range(repeats):
            results, elapsed = semantic_search_usearch(
                queries,
                corpus_index=index,
                corpus_precision=corpus_precision,
                top_k=TOP_K,
                rescore=False,
                ranges=ranges,
            )
            seconds.append(elapsed)
        rescored = None
        if precision != "float32":
            rescored_results, _ = semantic_search_usearch(
                data.queries,
                corpus_index=index,
                corpus_precision=corpus_precision,
                top_k=TOP_K,
                rescore=True,
                rescore_multiplier=RESCORE_MULTIPLIER,
                ranges=ranges,
            )
            rescored = _recall(rescored_results, data.relevant)
        rows.append(
            {
                "precision": precision,
                "recall@10": _recall(results, data.relevant),
                "recall@10_rescored": rescored,
                "index_bytes": index_bytes,
                "bytes_per_vector": index_bytes / len(data.corpus),
                "vector_bytes": {"float32": 4, "int8": 1, "binary": 1 / 8}[precision] * data.corpus.shape[1],
                "ms_per_query": 1000 * statistics.median(seconds) / len(data.queries),
            }
        )
    reference = rows[0]["recall@10"]
    for row in rows:
        row["retention"] = row["recall@10"] / reference if reference else float("nan")
        row["retention_rescored"] = (
            row["recall@10_rescored"] / reference if row["recall@10_rescored"] is not None and reference else None
        )
    return rows


def _index(data: RetrievalSet, precision: str) -> tuple[Index, str, np.ndarray | None]:
    dim = data.corpus.shape[1]
    keys = np.arange(len(data.corpus))
    if precision == "float32":
        index = Index(ndim=dim, metric="ip", dtype="f32")
        index.add(keys, data.corpus.astype(np.float32))
        return index, "float32", None
    if precision == "int8":
        ranges = np.vstack([data.calibration.min(0), data.calibration.max(0)]).astype(np.float32)
        index = Index(ndim=dim, metric="ip", dtype="i8")
        index.add(keys, quantize_embeddings(data.corpus, "int8", ranges=ranges))
        return index, "int8", ranges
    index = Index(ndim=dim, metric="hamming", dtype="b1")
    index.add(keys, quantize_embeddings(data.corpus, "ubinary"))
    return index, "ubinary", None


def _query_precision(precision: str) -> str:
    return "ubinary" if precision == "binary" else precision


def _recall(results: Sequence[Sequence[dict]], relevant: Sequence[set[int]]) -> float:
    return float(
        np.mean(
            [
                len({hit["corpus_id"] for hit in hits} & rel) / len(rel)
                for hits, rel in zip(results, relevant, strict=True)
            ]
        )
    )


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _qrels(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle][1:]
    return [(query, doc) for query, doc, score in rows if float(score) > 0]


def write_markdown(path: Path, summary: dict[str, Any]) -> None:
    lines = [
        "# Recall@10 retention of quantized indexes (int8, binary) vs float32",
        "",
        f"Command: `{summary['command']}`  ",
        f"Wall time {summary['wall_seconds'] / 60:.1f} min; {summary['environment']['cpu']}, "
        f"{summary['environment']['torch_threads']} torch thread(s), load average at the end "
        f"{summary['environment']['load_average_at_end'][0]:.1f}.",
        "",
        "Indexes: usearch, exact search; float32 `ip`, int8 `ip` (buckets calibrated on the training side), binary "
        f"`hamming` on sign bits; queries quantized like the corpus; rescored = top {TOP_K * RESCORE_MULTIPLIER} "
        "re-ranked with the float32 query. Vector bytes: one stored embedding; the usearch file adds its graph links and keys. Latency: median of 5 batched searches, divided by the number of queries.",
        "",
        "| task | model | precision | recall@10 | retention | rescored recall@10 | rescored retention | vector bytes | index file | file bytes/vector | ms/query |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, models in summary["results"].items():
        info = summary["tasks"][task]
        for model, rows in models.items():
            for row in rows:
                rescored = "–" if row["recall@10_rescored"] is None else f"{100 * row['recall@10_rescored']:.1f}"
                rescored_retention = (
                    "–" if row["retention_rescored"] is None else f"{100 * row['retention_rescored']:.1f} %"
                )
                lines.append(
                    f"| {task} ({info['queries']} queries, {info['corpus']} docs) | {model} | {row['precision']} | "
                    f"{100 * row['recall@10']:.1f} | {100 * row['retention']:.1f} % | {rescored} | {rescored_retention} | "
                    f"{row['vector_bytes']:.0f} | {row['index_bytes'] / 1024:.1f} KiB | {row['bytes_per_vector']:.0f} | {row['ms_per_query']:.3f} |"
                )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.benchmarks.quantized_retrieval", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--shared-dir", type=Path, default=Path("../shared"), help="folder with data/ and weights/")
    add_output_option(parser, "quantized_retrieval")  # the committed evaluation/results/... needs --overwrite
    parser.add_argument("--cache-dir", help="tower-output cache (default: ~/.cache/st_oblique/topology)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--scifact-corpus", type=int, default=1000, help="documents in the SciFact index")
    parser.add_argument("--max-words", type=int, default=96, help="words kept of each SciFact document")
    parser.add_argument("--smoke", action="store_true", help="tiny subsets and 1 epoch (a check that it runs)")
    args = parser.parse_args(argv)
    checked_output(parser, args.output_dir, args.overwrite)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "transformers", "httpx", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not (args.shared_dir / "data").is_dir() or not (args.shared_dir / "weights").is_dir():
        parser.error(
            f"{args.shared_dir} has no data/ and weights/ folders; pass --shared-dir (the real data is needed)."
        )
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    sets = {
        "Flickr8k-1k t2i": flickr_sets(args.shared_dir, args.cache_dir, args.smoke),
        "SciFact": scifact_sets(args.shared_dir, args.cache_dir, args.smoke, args.scifact_corpus, args.max_words),
    }
    results = {task: {model: measure(data) for model, data in models.items()} for task, models in sets.items()}
    summary = {
        "command": " ".join(
            ["python", "-m", "evaluation.benchmarks.quantized_retrieval", *(argv if argv is not None else sys.argv[1:])]
        ),
        "smoke": args.smoke,
        "arms": {name: {**arm.__dict__, "learning_rate": lr} for name, (arm, lr) in ARMS.items()},
        "tasks": {
            task: {
                "queries": len(next(iter(models.values())).queries),
                "corpus": len(next(iter(models.values())).corpus),
            }
            for task, models in sets.items()
        },
        "results": results,
        "wall_seconds": time.monotonic() - start,
        "environment": _environment(),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_markdown(args.output_dir / "results.md", summary)
    print((args.output_dir / "results.md").read_text(encoding="utf-8"))
    return 0


def _environment() -> dict[str, Any]:
    """The topology study's record of the machine, plus the index library's version."""
    import usearch

    version = usearch.VERSION if hasattr(usearch, "VERSION") else getattr(usearch, "__version__", "")
    return {**environment(), "usearch": version}


if __name__ == "__main__":
    sys.exit(main())
