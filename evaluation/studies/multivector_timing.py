"""Index build time, queries per second and index bytes of each view, measured alternately in one process.

- dense views: faiss ``IndexFlatIP`` (exact) and a usearch HNSW index (``metric="ip"``, float32);
- multi views: Sentence Transformers' MaxSim over every document (:func:`sentence_transformers.util.maxsim`), with
  the documents padded once into a ``(N, T, d)`` tensor and a mask ("building" that tensor is the index build).
  No HNSW: a set of vectors per document has no single point to put in a graph (that is what MUVERA is for).

Every measurement uses one thread (torch, faiss's OpenMP, usearch's ``threads=1``) and is repeated ``repeats``
times with the views in a rotated order, so that the load of a shared machine spreads over all of them; the median
is reported with the load averages before and after.

Example::

    timings = time_views({"oblique16": view, "multivector32_pooled": multi_view}, repeats=3, top_k=10)
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from evaluation.studies.multivector_arms import View

logger = logging.getLogger(__name__)


def _seconds(function) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def _pad(documents: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(tokens) for tokens in documents])
    padded = torch.nn.utils.rnn.pad_sequence(documents, batch_first=True)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask


def measure_dense(view: View, top_k: int, latency_queries: int, hnsw: Mapping[str, int]) -> dict[str, float]:
    import faiss
    from usearch.index import Index

    faiss.omp_set_num_threads(1)
    documents, queries = np.ascontiguousarray(view.documents), np.ascontiguousarray(view.queries)
    dim = documents.shape[1]

    def build_flat():
        index = faiss.IndexFlatIP(dim)
        index.add(documents)
        return index

    flat_build, flat = _seconds(build_flat)
    flat_seconds, (_, exact) = _seconds(lambda: flat.search(queries, top_k))
    flat_latency = [_seconds(lambda q=q: flat.search(queries[q : q + 1], top_k))[0] for q in range(latency_queries)]

    def build_hnsw():
        index = Index(ndim=dim, metric="ip", dtype="f32", **hnsw)
        index.add(np.arange(len(documents)), documents, threads=1)
        return index

    hnsw_build, graph = _seconds(build_hnsw)
    hnsw_seconds, matches = _seconds(lambda: graph.search(queries, top_k, threads=1))
    hnsw_latency = [
        _seconds(lambda q=q: graph.search(queries[q : q + 1], top_k, threads=1))[0] for q in range(latency_queries)
    ]
    found = np.asarray(matches.keys)
    overlap = np.mean([len(set(found[i]) & set(exact[i])) / top_k for i in range(len(queries))])
    return {
        "exact_build_seconds": flat_build,
        "exact_qps": len(queries) / flat_seconds,
        "exact_latency_ms": 1000 * statistics.median(flat_latency),
        "hnsw_build_seconds": hnsw_build,
        "hnsw_qps": len(queries) / hnsw_seconds,
        "hnsw_latency_ms": 1000 * statistics.median(hnsw_latency),
        f"hnsw_recall_of_exact@{top_k}": float(overlap),
        "exact_index_bytes_per_document": float(documents.nbytes / len(documents)),
        "hnsw_index_bytes_per_document": float(len(graph.save()) / len(documents)),
    }


def measure_multi(view: View, top_k: int, latency_queries: int) -> dict[str, float]:
    from sentence_transformers.util import maxsim

    build, (documents, document_mask) = _seconds(lambda: _pad(view.documents))
    queries, query_mask = _pad(view.queries)

    def search(rows: slice):
        with torch.inference_mode():
            scores = maxsim(queries[rows], documents, a_mask=query_mask[rows], b_mask=document_mask)
            return torch.topk(scores, top_k, dim=1)

    seconds, _ = _seconds(lambda: search(slice(0, len(queries))))
    latency = [_seconds(lambda q=q: search(slice(q, q + 1)))[0] for q in range(latency_queries)]
    return {
        "exact_build_seconds": build,
        "exact_qps": len(queries) / seconds,
        "exact_latency_ms": 1000 * statistics.median(latency),
        "exact_index_bytes_per_document": float(view.bytes_per_document()),
        "padded_bytes_per_document": float(documents.element_size() * documents[0].numel()),
    }


def time_views(
    views: Mapping[str, View],
    repeats: int,
    top_k: int = 10,
    latency_queries: int = 50,
    hnsw: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Median over ``repeats`` rounds (views rotated each round) of every view's build time, QPS and latency."""
    hnsw = dict(hnsw or {"connectivity": 16, "expansion_add": 128, "expansion_search": 64})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    names = list(views)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    load_before = os.getloadavg()
    try:
        for repeat in range(repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in order:
                view = views[name]
                load = os.getloadavg()[0]
                if view.kind == "dense":
                    result = measure_dense(view, top_k, latency_queries, hnsw)
                else:
                    result = measure_multi(view, top_k, latency_queries)
                result["load_average_1min"] = load
                rounds[name].append(result)
                logger.info("timing %s round %d: %s", name, repeat, {k: round(v, 4) for k, v in result.items()})
    finally:
        torch.set_num_threads(threads)
    medians = {
        name: {key: float(statistics.median(r[key] for r in results)) for key in results[0]}
        for name, results in rounds.items()
    }
    return {
        "medians": medians,
        "rounds": rounds,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "repeats": repeats,
        "top_k": top_k,
        "latency_queries": latency_queries,
        "hnsw": hnsw,
        "threads": 1,
    }


__all__ = ["measure_dense", "measure_multi", "time_views"]
