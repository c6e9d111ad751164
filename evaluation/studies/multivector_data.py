"""Training pairs, validation and test tasks of the multi-vector study, with the leakage checks.

- Training: Flickr8k same-image caption pairs (one pair per image; never the 1000 Flickr8k-1k test images nor the
  validation images) and MSRP paraphrases (:func:`evaluation.studies.splits.flickr_text_pairs`,
  :func:`~evaluation.studies.splits.msrp_paraphrase_pairs`). A pair is dropped when either sentence, normalized
  (lower case, letters and digits only), is any validation or test text: STSb's test set contains MSRP sentences
  (MSRpar) and image captions, so this is not hypothetical.
- Validation (learning rate and MUVERA design): SciFact claims of the *train* qrels against their abstracts plus
  random others; caption→caption retrieval on Flickr8k images outside Flickr8k-1k and outside training.
- Test: SciFact test claims (BEIR ``qrels/test.tsv``) against their abstracts plus random others (or the whole
  corpus); caption→caption retrieval on Flickr8k-1k (each of the 5000 captions queries the other 4999; the other
  4 captions of its image are relevant); STSb test pairs.

Example::

    data = build_study_data(config, Path("../shared"))
    data.pairs[:2], data.validation["scifact"].queries, data.test["stsb"].scores
    assert not leaked_texts(data.pairs, data.evaluation_texts())
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.studies.splits import flickr_text_pairs, msrp_paraphrase_pairs


@dataclass
class RetrievalTask:
    """Queries, corpus and relevance judgements (ids are strings, as in BEIR and ST's IR evaluator).

    ``exclude_self``: the queries are corpus entries with the same id (caption→caption), and a query's own entry
    is removed from its results before scoring.
    """

    name: str
    queries: dict[str, str]
    corpus: dict[str, str]
    relevant: dict[str, set[str]]
    exclude_self: bool = False

    def texts(self) -> list[str]:
        return [*self.queries.values(), *self.corpus.values()]


@dataclass
class PairTask:
    """Sentence pairs with gold similarity scores (STSb), scored by Spearman correlation."""

    name: str
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]

    def texts(self) -> list[str]:
        return [*self.sentences1, *self.sentences2]


@dataclass
class StudyData:
    pairs: list[tuple[str, str]]
    validation: dict[str, RetrievalTask]
    test: dict[str, RetrievalTask | PairTask]
    held_out: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def evaluation_texts(self) -> list[str]:
        """Every validation and test text, and the other held-out texts (the whole SciFact corpus and claims)."""
        tasks = [*self.validation.values(), *self.test.values()]
        return [text for task in tasks for text in task.texts()] + list(self.held_out)


def normalize_text(text: str) -> str:
    """Lower case, letters and digits only, single spaces: what makes two sentences the same sentence."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def leaked_texts(pairs: Iterable[tuple[str, str]], evaluation_texts: Iterable[str]) -> set[str]:
    """The normalized training sentences that are also evaluation texts (empty when there is no leakage)."""
    held_out = {normalize_text(text) for text in evaluation_texts}
    return {normalize_text(text) for pair in pairs for text in pair} & held_out


def drop_leaked_pairs(
    pairs: Sequence[tuple[str, str]], evaluation_texts: Iterable[str]
) -> tuple[list[tuple[str, str]], int]:
    """``pairs`` without those sharing a normalized sentence with ``evaluation_texts``, and how many were dropped."""
    held_out = {normalize_text(text) for text in evaluation_texts}
    kept = [pair for pair in pairs if not any(normalize_text(text) in held_out for text in pair)]
    return kept, len(pairs) - len(kept)


# ---------------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------------


def read_flickr_captions(csv_path: Path) -> dict[str, list[str]]:
    """``{image file name: [captions]}`` of Flickr8k's caption CSV (all 8091 images)."""
    groups: dict[str, list[str]] = {}
    with open(csv_path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            groups.setdefault(row["image"], []).append(row["caption"].strip())
    return groups


def read_flickr_1k_images(tsv_path: Path) -> list[str]:
    """The 1000 image names of Flickr8k-1k (``captions.tsv``), in file order."""
    with open(tsv_path, encoding="utf-8", newline="") as handle:
        return list(dict.fromkeys(row["image"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)))


def read_scifact(root: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, set[str]]]]:
    """SciFact in BEIR layout: corpus ``{id: "title. text"}``, queries ``{id: text}``, ``{split: qrels}``."""
    corpus = {row["_id"]: f"{row.get('title', '')}. {row['text']}".strip() for row in _jsonl(root / "corpus.jsonl")}
    queries = {row["_id"]: row["text"] for row in _jsonl(root / "queries.jsonl")}
    qrels: dict[str, dict[str, set[str]]] = {}
    for split in ("train", "test"):
        relevant: dict[str, set[str]] = {}
        with open(root / "qrels" / f"{split}.tsv", encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if int(row["score"]) > 0:
                    relevant.setdefault(row["query-id"], set()).add(row["corpus-id"])
        qrels[split] = relevant
    return corpus, queries, qrels


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# ---------------------------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------------------------


def scifact_task(
    name: str,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    relevant: Mapping[str, set[str]],
    num_queries: int | None,
    corpus_size: int | None,
    seed: int,
) -> RetrievalTask:
    """``num_queries`` random claims (all: None) against their abstracts plus random others, ``corpus_size`` in all
    (the whole corpus: None)."""
    rng = np.random.default_rng(seed)
    claim_ids = sorted(relevant, key=int)
    if num_queries is not None and num_queries < len(claim_ids):
        claim_ids = sorted(rng.choice(claim_ids, size=num_queries, replace=False).tolist(), key=int)
    needed = sorted({doc for claim in claim_ids for doc in relevant[claim]})
    if corpus_size is None:
        doc_ids = sorted(corpus)
    else:
        others = sorted(set(corpus) - set(needed))
        extra = max(0, corpus_size - len(needed))
        doc_ids = sorted(needed + rng.choice(others, size=min(extra, len(others)), replace=False).tolist())
    return RetrievalTask(
        name,
        queries={claim: queries[claim] for claim in claim_ids},
        corpus={doc: corpus[doc] for doc in doc_ids},
        relevant={claim: set(relevant[claim]) for claim in claim_ids},
    )


def caption_task(name: str, images: Sequence[str], captions: Mapping[str, Sequence[str]]) -> RetrievalTask:
    """Caption→caption retrieval: every caption of ``images`` queries all captions; the other captions of its image
    are relevant and its own entry is excluded."""
    texts: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for image in images:
        ids = [f"{image}#{index}" for index in range(len(captions[image]))]
        texts.update(zip(ids, captions[image], strict=True))
        for caption_id in ids:
            relevant[caption_id] = set(ids) - {caption_id}
    return RetrievalTask(name, queries=dict(texts), corpus=dict(texts), relevant=relevant, exclude_self=True)


def stsb_task(path: Path, max_pairs: int | None, seed: int) -> PairTask:
    from st_oblique.evaluation.mteb_tasks.text import read_sts_benchmark

    rows = read_sts_benchmark(path)
    if max_pairs is not None and max_pairs < len(rows):
        rows = [rows[index] for index in sorted(np.random.default_rng(seed).choice(len(rows), max_pairs, replace=False))]
    return PairTask("stsb", [a for a, _, _ in rows], [b for _, b, _ in rows], [float(s) for _, _, s in rows])


def build_study_data(config: Mapping[str, Any], shared: Path) -> StudyData:
    """Training pairs, validation and test tasks from ``config`` (the study YAML's ``data`` section)."""
    data_root = shared / "data"
    flickr_dir = data_root / "flickr8k_1k"
    captions = read_flickr_captions(flickr_dir / "captions_all_8091_images.csv")
    test_images = read_flickr_1k_images(flickr_dir / "captions.tsv")
    if config.get("flickr_test_images"):
        test_images = test_images[: config["flickr_test_images"]]
    rng = np.random.default_rng(config["seed"])
    outside = sorted(set(captions) - set(read_flickr_1k_images(flickr_dir / "captions.tsv")))
    validation_images = sorted(rng.choice(outside, size=config["validation"]["flickr_images"], replace=False).tolist())

    corpus, queries, qrels = read_scifact(data_root / "scifact_beir")
    validation_config, test_config = config["validation"], config["test"]
    validation = {
        "scifact": scifact_task(
            "scifact-train-claims",
            corpus,
            queries,
            qrels["train"],
            validation_config["scifact_queries"],
            validation_config["scifact_corpus"],
            config["seed"],
        ),
        "flickr": caption_task("flickr8k-validation-images", validation_images, captions),
    }
    test: dict[str, RetrievalTask | PairTask] = {
        "scifact": scifact_task(
            "scifact-test",
            corpus,
            queries,
            qrels["test"],
            test_config.get("scifact_queries"),
            test_config["scifact_corpus"],
            config["seed"],
        ),
        "flickr": caption_task("flickr8k-1k", test_images, captions),
        "stsb": stsb_task(data_root / "stsbenchmark" / "stsbenchmark" / "sts-test.csv", test_config.get("stsb_pairs"),
                          config["seed"]),
    }
    pair_counts = config["pairs"]
    excluded = set(test_images) | set(validation_images) | set(read_flickr_1k_images(flickr_dir / "captions.tsv"))
    pairs = flickr_text_pairs(
        flickr_dir / "captions_all_8091_images.csv", excluded, pair_counts["flickr"], pair_counts["seed"]
    )
    pairs += msrp_paraphrase_pairs(
        data_root / "msr_paraphrase" / "msr-para-train.tsv", pair_counts["msrp"], pair_counts["seed"]
    )
    # Every SciFact text is held out, not only the sampled ones: the timing phase searches the whole corpus.
    data = StudyData([], validation, test, held_out=[*corpus.values(), *queries.values()])
    kept, dropped = drop_leaked_pairs(pairs, data.evaluation_texts())
    order = np.random.default_rng(pair_counts["seed"]).permutation(len(kept))
    data.pairs = [kept[index] for index in order]
    data.notes = {
        "pairs": len(data.pairs),
        "pairs_dropped_for_leakage": dropped,
        "validation_images": len(validation_images),
        "test_images": len(test_images),
        "validation": {name: _task_sizes(task) for name, task in validation.items()},
        "test": {name: _task_sizes(task) for name, task in test.items()},
    }
    return data


def _task_sizes(task: RetrievalTask | PairTask) -> dict[str, int]:
    if isinstance(task, PairTask):
        return {"pairs": len(task.scores)}
    return {"queries": len(task.queries), "corpus": len(task.corpus)}


__all__ = [
    "PairTask",
    "RetrievalTask",
    "StudyData",
    "build_study_data",
    "caption_task",
    "drop_leaked_pairs",
    "leaked_texts",
    "normalize_text",
    "read_scifact",
    "scifact_task",
    "stsb_task",
]
