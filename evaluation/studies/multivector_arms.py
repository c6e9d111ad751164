"""The arms of the multi-vector study: build, train, encode, search and score.

Trained arms (one model each, same base encoder, pairs, batches and step budget):

- ``oblique``: :func:`st_oblique.oblique_text_model` (K class tokens of d floats, ``token_source`` configurable)
  with :class:`st_oblique.ObliqueContrastiveLoss`. Stored: one K*d vector, scored by a dot product.
- ``multivector``: Sentence Transformers' :class:`~sentence_transformers.MultiVectorEncoder` (Transformer, a
  token-level ``Dense`` to ``token_dim``, ``MultiVectorMask``, ``Normalize``) trained with
  ``MultiVectorTokenPoolingLoss`` around ``MultiVectorMultipleNegativesRankingLoss`` over the pooling variants
  ``[None, HierarchicalTokenPooling(max_tokens)]`` (pooling-aware: unpooled and pooled documents both trained).
- ``single``: the published mean-pooling model with a ``Dense`` projection to ``dim`` and ``Normalize``, trained
  with ``MultipleNegativesRankingLoss``: one unit vector.

Views (what is stored per document and how it is scored), several per multi-vector model:
``dense`` views (a ``(N, D)`` float32 matrix, inner product; exact search with faiss ``IndexFlatIP``) and
``multi`` views (a list of ``(n_i, d)`` token matrices, MaxSim with :func:`sentence_transformers.util.maxsim`).
A multi-vector model gives ``pooled`` (documents pooled by ``HierarchicalTokenPooling.pool``), ``unpooled``
(every token; the quality ceiling) and MUVERA views (:mod:`evaluation.studies.fixed_dimensional_encoding` of the
pooled or unpooled document vectors, one per design).

Example::

    arm = StudyArm.from_config("oblique16", {"kind": "oblique", "num_tokens": 16, "token_dim": 32})
    model, info = train_arm(arm, "../shared/weights/all-MiniLM-L6-v2", pairs, TrainSettings(), seed=0,
                            learning_rate=5e-5)
    views = encode_retrieval(arm, model, task)          # {"oblique16": View(kind="dense", ...)}
    metrics = retrieval_metrics(task, views["oblique16"])
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from evaluation.studies.fixed_dimensional_encoding import FDEConfig, FixedDimensionalEncoder
from evaluation.studies.lit_heads import named_from_config
from evaluation.studies.multivector_data import PairTask, RetrievalTask

logger = logging.getLogger(__name__)

ArmKind = Literal["oblique", "multivector", "single"]
NEW_MODULES = r"model\.[1-9]\d*\."
"""Parameters of the modules after the pretrained Transformer (module 0): new heads, trained at the head rate."""
RETRIEVAL_DEPTH = 100
"""Results kept per query: enough for recall@100."""


@dataclass(frozen=True)
class StudyArm:
    """One trained arm. ``token_dim`` and ``num_tokens`` / ``max_tokens`` / ``dim`` set its bytes per document."""

    name: str
    kind: ArmKind
    num_tokens: int = 16
    token_dim: int = 32
    token_source: str = "first"
    max_tokens: int = 16
    dim: int = 512
    scale: float = 1.0
    description: str = ""

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> StudyArm:
        arm = named_from_config(cls, name, config)
        if arm.kind not in ("oblique", "multivector", "single"):
            raise ValueError(f"Arm {name!r}: kind must be 'oblique', 'multivector' or 'single', got {arm.kind!r}.")
        return arm


@dataclass(frozen=True)
class TrainSettings:
    """What every arm shares: batch, head learning rate, warm-up, steps (None: one epoch), text length."""

    batch_size: int = 32
    head_learning_rate: float = 1e-3
    warmup_ratio: float = 0.1
    max_steps: int | None = None
    max_seq_length: int = 128
    encode_batch_size: int = 64


@dataclass
class View:
    """One stored representation of a task: ``dense`` ((Q, D) and (N, D) float32 arrays, inner product) or
    ``multi`` (lists of (n_i, d) float32 tensors, MaxSim). Documents follow the task's corpus order."""

    kind: Literal["dense", "multi"]
    queries: Any
    documents: Any
    notes: dict[str, Any] = field(default_factory=dict)

    def bytes_per_document(self) -> float:
        """float32 bytes stored per document (token vectors only for multi views; no offsets or graph)."""
        if self.kind == "dense":
            return float(self.documents.shape[1] * 4)
        return float(np.mean([len(tokens) for tokens in self.documents]) * self.documents[0].shape[1] * 4)


# ---------------------------------------------------------------------------------------------------------------
# Build and train
# ---------------------------------------------------------------------------------------------------------------


def build_arm(arm: StudyArm, model_path: str, max_seq_length: int):
    """``(model, loss)`` of an arm, the head freshly initialised from torch's current seed."""
    if arm.kind == "oblique":
        import st_oblique

        model = st_oblique.oblique_text_model(
            model_path,
            num_tokens=arm.num_tokens,
            token_dim=arm.token_dim,
            token_source=arm.token_source,
            max_seq_length=max_seq_length,
            device="cpu",
        )
        return model, st_oblique.ObliqueContrastiveLoss(model, scale=arm.scale)
    if arm.kind == "multivector":
        from sentence_transformers import MultiVectorEncoder
        from sentence_transformers.base.modules import Normalize, Transformer
        from sentence_transformers.base.modules.dense import Dense
        from sentence_transformers.multi_vector_encoder.losses import (
            MultiVectorMultipleNegativesRankingLoss,
            MultiVectorTokenPoolingLoss,
        )
        from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

        transformer = Transformer(model_path, max_seq_length=max_seq_length)
        projection = Dense(
            transformer.get_embedding_dimension(),
            arm.token_dim,
            bias=False,
            activation_function=None,
            module_input_name="token_embeddings",
        )
        model = MultiVectorEncoder(
            modules=[transformer, projection, MultiVectorMask(), Normalize(module_input_name="token_embeddings")],
            device="cpu",
        )
        loss = MultiVectorTokenPoolingLoss(
            model,
            MultiVectorMultipleNegativesRankingLoss(model, scale=arm.scale),
            token_poolings=[None, document_pooling(arm)],
        )
        return model, loss
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    published = SentenceTransformer(model_path, device="cpu")
    published.max_seq_length = max_seq_length
    transformer, pooling = published[0], published[1]
    projection = Dense(pooling.get_embedding_dimension(), arm.dim, activation_function=None)
    model = SentenceTransformer(modules=[transformer, pooling, projection, Normalize()], device="cpu")
    return model, MultipleNegativesRankingLoss(model, scale=arm.scale)


def document_pooling(arm: StudyArm):
    """Sentence Transformers' Ward pooling of document tokens to at most ``max_tokens`` vectors ([CLS] kept)."""
    from sentence_transformers.multi_vector_encoder.modules import HierarchicalTokenPooling

    return HierarchicalTokenPooling(max_tokens=arm.max_tokens)


def train_arm(
    arm: StudyArm,
    model_path: str,
    pairs: Sequence[tuple[str, str]],
    settings: TrainSettings,
    seed: int,
    learning_rate: float,
) -> tuple[Any, dict[str, Any]]:
    """Build the arm (head from ``seed``) and train it on ``pairs`` (anchor, positive).

    The batches come from the trainer's sampler seeded with ``seed``: every arm of a seed sees the same batches.
    The pretrained Transformer learns at ``learning_rate``, the new modules after it at
    ``settings.head_learning_rate``.
    """
    from datasets import Dataset
    from transformers import set_seed

    from evaluation.studies.text_finetune import pair_training_arguments

    set_seed(seed)
    model, loss = build_arm(arm, model_path, settings.max_seq_length)
    dataset = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    if arm.kind == "multivector":
        from sentence_transformers import (
            MultiVectorEncoderTrainer as Trainer,
        )
        from sentence_transformers import (
            MultiVectorEncoderTrainingArguments as Arguments,
        )
    else:
        from sentence_transformers import SentenceTransformerTrainer as Trainer
        from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    with tempfile.TemporaryDirectory(prefix="multivector-study-") as output_dir:
        args = pair_training_arguments(
            Arguments,
            output_dir,
            batch_size=settings.batch_size,
            learning_rate=learning_rate,
            learning_rate_mapping={NEW_MODULES: settings.head_learning_rate},
            warmup_ratio=settings.warmup_ratio,
            seed=seed,
            max_steps=settings.max_steps or -1,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, loss=loss)
        start, cpu_start = time.monotonic(), time.process_time()
        trainer.train()
        seconds, cpu_seconds = time.monotonic() - start, time.process_time() - cpu_start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model.eval()
    return model, {
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "steps": trainer.state.global_step,
        "loss_history": losses,
    }


# ---------------------------------------------------------------------------------------------------------------
# Encode
# ---------------------------------------------------------------------------------------------------------------


def primary_view(arm: StudyArm) -> str:
    """The view the arm's learning rate is chosen on (the pooled one for a multi-vector model)."""
    return f"{arm.name}_pooled" if arm.kind == "multivector" else arm.name


def encode_texts(arm: StudyArm, model, queries: Sequence[str], documents: Sequence[str], batch_size: int,
                 fde: Mapping[str, FDEConfig] | None = None) -> dict[str, View]:
    """Every view of ``arm`` for these queries and documents (MUVERA designs ``fde``: ``{name: config}``, each
    applied to the pooled and the unpooled document vectors)."""
    # Caption->caption tasks query the corpus itself: no arm here encodes a query differently from a document
    # (no prompts, no query expansion, an empty skiplist; pooling is applied below), so encode those texts once.
    same_texts = list(queries) == list(documents)
    with torch.inference_mode():
        if arm.kind != "multivector":
            document_embeddings = model.encode_document(list(documents), batch_size=batch_size, convert_to_numpy=True)
            query_embeddings = (
                document_embeddings
                if same_texts
                else model.encode_query(list(queries), batch_size=batch_size, convert_to_numpy=True)
            )
            return {arm.name: View("dense", query_embeddings.astype(np.float32), document_embeddings.astype(np.float32))}
        document_tokens = [t.float().cpu() for t in model.encode_document(list(documents), batch_size=batch_size)]
        query_tokens = (
            document_tokens
            if same_texts
            else [t.float().cpu() for t in model.encode_query(list(queries), batch_size=batch_size)]
        )
        start = time.monotonic()
        pooled = [t.float() for t in document_pooling(arm).pool(document_tokens)]
        pooling_seconds = time.monotonic() - start
    views = {
        f"{arm.name}_pooled": View("multi", query_tokens, pooled, {"pooling_seconds": pooling_seconds}),
        f"{arm.name}_unpooled": View("multi", query_tokens, document_tokens),
    }
    for name, config in (fde or {}).items():
        encoder = FixedDimensionalEncoder(config)
        query_fde = encoder.encode_queries([t.numpy() for t in query_tokens])
        for source, tokens in (("pooled", pooled), ("unpooled", document_tokens)):
            start = time.monotonic()
            document_fde = encoder.encode_documents([t.numpy() for t in tokens])
            views[f"{arm.name}_muvera_{name}_{source}"] = View(
                "dense", query_fde, document_fde, {"fde_seconds": time.monotonic() - start, "fde": config.describe()}
            )
    return views


def encode_retrieval(arm: StudyArm, model, task: RetrievalTask, batch_size: int,
                     fde: Mapping[str, FDEConfig] | None = None) -> dict[str, View]:
    return encode_texts(arm, model, list(task.queries.values()), list(task.corpus.values()), batch_size, fde)


# ---------------------------------------------------------------------------------------------------------------
# Search and score
# ---------------------------------------------------------------------------------------------------------------


def exact_scores(view: View) -> torch.Tensor:
    """``(Q, N)`` exact scores: inner products, or Sentence Transformers' MaxSim."""
    if view.kind == "dense":
        return torch.from_numpy(view.queries) @ torch.from_numpy(view.documents).T
    from sentence_transformers.util import maxsim

    return maxsim(view.queries, view.documents)


def exact_top_k(view: View, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, indices)``, each ``(Q, k)``, of exact search: faiss ``IndexFlatIP`` or MaxSim over every document."""
    k = min(k, len(view.documents))
    if view.kind == "dense":
        import faiss

        index = faiss.IndexFlatIP(view.documents.shape[1])
        index.add(view.documents)
        scores, indices = index.search(view.queries, k)
        return scores, indices
    scores, indices = torch.topk(exact_scores(view), k, dim=1)
    return scores.numpy(), indices.numpy()


def ir_evaluator(task: RetrievalTask):
    """Sentence Transformers' IR evaluator for the task's ids; its ``compute_metrics`` scores our result lists."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    return InformationRetrievalEvaluator(
        queries=task.queries,
        corpus=task.corpus,
        relevant_docs=task.relevant,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[1, 10, 100],
        map_at_k=[100],
        name=task.name,
        write_csv=False,
    )


def retrieval_metrics(task: RetrievalTask, scores: np.ndarray, indices: np.ndarray) -> dict[str, float]:
    """nDCG@10, recall@{1,10,100}, MRR@10, MAP@100, accuracy@{1,10} of top-k results (ST's definitions).

    ``scores`` / ``indices``: ``(Q, k)`` in the order of ``task.queries``; with ``exclude_self`` a query's own corpus
    entry is dropped from its list first.
    """
    evaluator = ir_evaluator(task)
    query_ids = list(task.queries)
    corpus_ids = list(task.corpus)
    position = {query_id: row for row, query_id in enumerate(query_ids)}
    results = []
    for query_id in evaluator.queries_ids:
        row = position[query_id]
        hits = [
            {"corpus_id": corpus_ids[int(index)], "score": float(score)}
            for score, index in zip(scores[row], indices[row], strict=True)
            if index >= 0 and not (task.exclude_self and corpus_ids[int(index)] == query_id)
        ]
        results.append(hits[:RETRIEVAL_DEPTH])
    computed = evaluator.compute_metrics(results)
    metrics = {}
    for family, values in computed.items():
        for k, value in values.items():
            metrics[f"{family.replace('@k', '')}@{k}"] = float(value)
    return metrics


def evaluate_retrieval(task: RetrievalTask, view: View) -> dict[str, float]:
    """Metrics of exact search with this view (one extra result per query when the query is in the corpus)."""
    scores, indices = exact_top_k(view, RETRIEVAL_DEPTH + int(task.exclude_self))
    return retrieval_metrics(task, scores, indices)


def pair_scores(view: View) -> np.ndarray:
    """``(P,)`` score of each (sentence1 as query, sentence2 as document) pair: dot product or MaxSim."""
    if view.kind == "dense":
        return np.einsum("ij,ij->i", view.queries, view.documents)
    from sentence_transformers.util import maxsim_pairwise

    return maxsim_pairwise(view.queries, view.documents).numpy()


def evaluate_pairs(task: PairTask, view: View) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    scores = pair_scores(view)
    return {"spearman": float(spearmanr(scores, task.scores).statistic), "pearson": float(pearsonr(scores, task.scores)[0])}


def evaluate_arm(
    arm: StudyArm,
    model,
    tasks: Mapping[str, RetrievalTask | PairTask],
    batch_size: int,
    fde: Mapping[str, FDEConfig] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{view: {task: metrics}}`` for every view of the arm on every task, plus bytes per document per task."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task_name, task in tasks.items():
        start = time.monotonic()
        if isinstance(task, PairTask):
            views = encode_texts(arm, model, task.sentences1, task.sentences2, batch_size, fde)
            for view_name, view in views.items():
                out.setdefault(view_name, {})[task_name] = evaluate_pairs(task, view)
        else:
            views = encode_retrieval(arm, model, task, batch_size, fde)
            for view_name, view in views.items():
                metrics = evaluate_retrieval(task, view)
                metrics["bytes_per_document"] = view.bytes_per_document()
                out.setdefault(view_name, {})[task_name] = metrics
        logger.info("%s on %s: %.0f s", arm.name, task_name, time.monotonic() - start)
    return out


__all__ = [
    "StudyArm",
    "TrainSettings",
    "View",
    "build_arm",
    "document_pooling",
    "encode_retrieval",
    "encode_texts",
    "evaluate_arm",
    "evaluate_pairs",
    "evaluate_retrieval",
    "exact_scores",
    "exact_top_k",
    "pair_scores",
    "primary_view",
    "retrieval_metrics",
    "train_arm",
]
