"""Offline MTEB text tasks: STSBenchmark (test), SICK-R and SciFact, read from their original local files.

Each is the official mteb task class (same evaluator, main score and metadata) with ``load_data`` reading
local files, so the scores equal MTEB's: all-MiniLM-L6-v2 gets STSBenchmark 0.8203, SICK-R 0.7758 and
SciFact nDCG@10 0.6451 with these tasks.

Example::

    import mteb
    from st_oblique.evaluation import mteb_model
    from st_oblique.evaluation.mteb_tasks import LocalSTSBenchmark

    task = LocalSTSBenchmark(data_root="../shared/data")           # or path="stsbenchmark/stsbenchmark"
    result = mteb.evaluate(mteb_model(model, name="minilm"), [task], cache=None)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict
from mteb.tasks.retrieval.eng.sci_fact_retrieval import SciFact
from mteb.tasks.sts.eng.sickr_sts import SickrSTS
from mteb.tasks.sts.eng.sts_benchmark_sts import STSBenchmarkSTS

from st_oblique.data.datasets.base import sample_indices
from st_oblique.evaluation.mteb_tasks.base import LocalTaskMixin, local_metadata

__all__ = ["LocalSICKR", "LocalSTSBenchmark", "LocalSciFact", "read_sick", "read_sts_benchmark"]


def read_sts_benchmark(path: str | Path) -> list[tuple[str, str, float]]:
    """``(sentence1, sentence2, score)`` rows of an STS Benchmark file (tab-separated, no quoting; fields 5-7)."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 7:
                raise ValueError(f"{path}:{number}: expected at least 7 tab-separated fields, got {len(fields)}.")
            rows.append((fields[5], fields[6], float(fields[4])))
    return rows


def read_sick(paths: Sequence[str | Path]) -> list[tuple[str, str, float]]:
    """``(sentence_A, sentence_B, relatedness_score)`` rows of SICK files (tab-separated with a header row)."""
    rows = []
    for path in paths:
        with open(path, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                rows.append((row["sentence_A"], row["sentence_B"], float(row["relatedness_score"])))
    return rows


def _sts_dataset(rows: list[tuple[str, str, float]], max_samples: int | None, seed: int) -> DatasetDict:
    indices = sample_indices(len(rows), max_samples, seed)
    kept = rows if indices is None else [rows[index] for index in indices]
    sentence1, sentence2, score = zip(*kept, strict=True) if kept else ((), (), ())
    return DatasetDict(
        {"test": Dataset.from_dict({"sentence1": list(sentence1), "sentence2": list(sentence2), "score": list(score)})}
    )


class LocalSTSBenchmark(LocalTaskMixin, STSBenchmarkSTS):
    """MTEB's STSBenchmark (test split, 1379 pairs) from the original ``sts-test.csv``.

    ``path``: the ``stsbenchmark`` folder holding ``sts-test.csv`` (or the file itself). ``max_samples``: pairs.
    """

    default_path = "stsbenchmark/stsbenchmark"
    metadata = local_metadata(STSBenchmarkSTS.metadata, "LocalSTSBenchmark")

    def _files(self, path: Path) -> list[Path]:
        return [path / "sts-test.csv" if path.is_dir() else path]

    def _read_files(self, path: Path) -> DatasetDict:
        return _sts_dataset(read_sts_benchmark(self._files(path)[0]), self.max_samples, self.seed)


class LocalSICKR(LocalTaskMixin, SickrSTS):
    """MTEB's SICK-R (all 9927 pairs of SICK 2014, as MTEB evaluates it) from the original SICK files.

    ``path``: the folder with ``SICK_train.txt``, ``SICK_trial.txt`` and ``SICK_test_annotated.txt``.
    ``max_samples``: pairs.
    """

    default_path = "sick2014"
    metadata = local_metadata(SickrSTS.metadata, "LocalSICK-R")
    files = ("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt")

    def _files(self, path: Path) -> list[Path]:
        return [path / name for name in self.files]

    def _read_files(self, path: Path) -> DatasetDict:
        missing = [str(file) for file in self._files(path) if not file.is_file()]
        if missing:
            raise FileNotFoundError(f"LocalSICK-R needs {missing}.")
        return _sts_dataset(read_sick(self._files(path)), self.max_samples, self.seed)


class LocalSciFact(LocalTaskMixin, SciFact):
    """MTEB's SciFact (test: 300 claims over 5183 abstracts) from a BEIR-layout folder.

    ``path``: the folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv``. ``max_samples``:
    queries; the corpus is then cut to their relevant documents plus ``corpus_size`` random others.
    """

    default_path = "scifact_beir"
    metadata = local_metadata(SciFact.metadata, "LocalSciFact")

    def __init__(self, *args, corpus_size: int = 500, **kwargs) -> None:
        self.corpus_size = corpus_size
        super().__init__(*args, **kwargs)

    def _files(self, path: Path) -> list[Path]:
        return [path / "corpus.jsonl", path / "queries.jsonl", path / "qrels" / "test.tsv"]

    def _subset_description(self, seed: int) -> str:
        return f"{super()._subset_description(seed)};corpus_size={self.corpus_size}"

    def _read_files(self, path: Path) -> dict:
        corpus_file, queries_file, qrels_file = self._files(path)
        relevant: dict[str, dict[str, int]] = {}
        with open(qrels_file, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                relevant.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
        queries = [record for record in _read_jsonl(queries_file) if str(record["_id"]) in relevant]
        corpus = _read_jsonl(corpus_file)
        indices = sample_indices(len(queries), self.max_samples, self.seed)
        if indices is not None:
            queries = [queries[index] for index in indices]
            relevant = {str(query["_id"]): relevant[str(query["_id"])] for query in queries}
            needed = {doc for docs in relevant.values() for doc in docs}
            others = [index for index, doc in enumerate(corpus) if str(doc["_id"]) not in needed]
            extra = sample_indices(len(others), self.corpus_size, self.seed) or range(len(others))
            keep = needed | {str(corpus[others[index]]["_id"]) for index in extra}
            corpus = [doc for doc in corpus if str(doc["_id"]) in keep]
        split = {
            "corpus": Dataset.from_dict(
                {
                    "id": [str(doc["_id"]) for doc in corpus],
                    "title": [doc.get("title", "") for doc in corpus],
                    "text": [doc.get("text", "") for doc in corpus],
                }
            ),
            "queries": Dataset.from_dict(
                {"id": [str(query["_id"]) for query in queries], "text": [query["text"] for query in queries]}
            ),
            "relevant_docs": relevant,
            "top_ranked": None,
        }
        return {"default": {"test": split}}


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
