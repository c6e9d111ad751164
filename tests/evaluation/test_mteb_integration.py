"""MTEB: model metadata (names, revisions, modalities, similarity), offline local tasks checked against
independent computations, the task/benchmark runner, and ``mteb.mock_run`` as a smoke test."""

from __future__ import annotations

import csv
import io
import logging
import math
import tarfile

import mteb
import pytest
import torch
from mteb.models.model_meta import ScoringFunction
from PIL import Image
from scipy.stats import spearmanr
from tiny_models import FLICKR_CAPTIONS, IMAGENETTE_WNIDS

from st_oblique.data.datasets.registry import IMAGENETTE_CLASSES
from st_oblique.evaluation import mteb_model
from st_oblique.evaluation.mteb_runner import resolve_mteb_tasks, run_mteb
from st_oblique.evaluation.mteb_tasks import (
    LOCAL_TASKS,
    LocalFlickr8kI2TRetrieval,
    LocalFlickr8kT2IRetrieval,
    LocalImagenetteZeroShot,
    LocalSciFact,
    LocalSICKR,
    LocalSTSBenchmark,
)


def evaluate(model, tasks, name="tiny/model"):
    result = mteb.evaluate(
        mteb_model(model, name=name), tasks, cache=None, show_progress_bar=False, co2_tracker=False, raise_error=True
    )
    return {task_result.task_name: task_result for task_result in result.task_results}


def test_model_meta_names_revisions_modalities(clip_model, oblique_model, text_model):
    clip_meta = mteb_model(clip_model, name="tiny/clip").mteb_model_meta
    assert clip_meta.modalities == ["image", "text"] and clip_meta.similarity_fn_name == ScoringFunction.COSINE
    oblique_meta = mteb_model(oblique_model, name="tiny/oblique", revision="v1").mteb_model_meta
    assert oblique_meta.similarity_fn_name == ScoringFunction.DOT_PRODUCT and oblique_meta.revision == "v1"
    assert oblique_meta.embed_dim == 32
    assert mteb_model(text_model, name="tiny/bert").mteb_model_meta.modalities == ["text"]
    with pytest.raises(ValueError, match="pass one explicitly"):
        mteb_model(text_model)

    revision = mteb_model(text_model, name="tiny/bert").mteb_model_meta.revision
    assert revision.startswith("w-") and revision != clip_meta.revision
    parameter = next(text_model.parameters())
    with torch.no_grad():
        parameter[0, 0] += 1.0
        try:
            assert mteb_model(text_model, name="tiny/bert").mteb_model_meta.revision != revision
        finally:
            parameter[0, 0] -= 1.0
    assert mteb_model(text_model, name="tiny/bert").mteb_model_meta.revision == revision


def test_local_text_tasks_match_independent_scores(text_model, data_root):
    tasks = [LocalSTSBenchmark(data_root=data_root), LocalSICKR(data_root=data_root), LocalSciFact(data_root=data_root)]
    results = evaluate(text_model, tasks)

    with open(data_root / "stsbenchmark/stsbenchmark/sts-test.csv", encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle]
    first = text_model.encode([row[5] for row in rows], convert_to_tensor=True)
    second = text_model.encode([row[6] for row in rows], convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(first, second).tolist()
    expected = spearmanr(cosine, [float(row[4]) for row in rows]).statistic
    assert results["LocalSTSBenchmark"].get_score() == pytest.approx(expected, abs=1e-6)

    sick_rows = []
    for name in ("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt"):
        with open(data_root / "sick2014" / name, encoding="utf-8") as handle:
            sick_rows += list(csv.DictReader(handle, delimiter="\t"))
    first = text_model.encode([row["sentence_A"] for row in sick_rows], convert_to_tensor=True)
    second = text_model.encode([row["sentence_B"] for row in sick_rows], convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(first, second).tolist()
    expected = spearmanr(cosine, [float(row["relatedness_score"]) for row in sick_rows]).statistic
    assert results["LocalSICK-R"].get_score() == pytest.approx(expected, abs=1e-6)

    # every test query's relevant document holds the same sentence: a perfect ranking for any encoder
    assert results["LocalSciFact"].get_score() == pytest.approx(1.0)


def test_subsets_change_the_revision(data_root):
    full, small = LocalSTSBenchmark(data_root=data_root), LocalSTSBenchmark(data_root=data_root, max_samples=3)
    assert full.metadata.dataset["revision"] != small.metadata.dataset["revision"]
    small.load_data()
    assert small.dataset["test"].num_rows == 3
    scifact = LocalSciFact(data_root=data_root, max_samples=2, corpus_size=1)
    scifact.load_data()
    split = scifact.dataset["default"]["test"]
    assert split["queries"].num_rows == 2 and split["corpus"].num_rows == 3  # 2 relevant docs + 1 other
    with pytest.raises(FileNotFoundError, match="LocalSciFact: data not found"):
        LocalSciFact(data_root=data_root / "missing")


def read_tar_images(path, names):
    with tarfile.open(path) as archive:
        return {name: Image.open(io.BytesIO(archive.extractfile(name).read())).convert("RGB") for name in names}


def ndcg_at_10(ranking: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(position + 2) for position, doc in enumerate(ranking[:10]) if doc in relevant)
    ideal = sum(1 / math.log2(position + 2) for position in range(min(len(relevant), 10)))
    return dcg / ideal


def test_local_image_tasks_match_independent_scores(oblique_model, data_root):
    results = evaluate(
        oblique_model,
        [
            LocalImagenetteZeroShot(data_root=data_root),
            LocalFlickr8kT2IRetrieval(data_root=data_root),
            LocalFlickr8kI2TRetrieval(data_root=data_root),
        ],
    )
    # zero-shot: argmax over "a photo of a {name}." prompts, images read straight from the tar
    with tarfile.open(data_root / "imagenette/imagenette_val_224.tar") as archive:
        names = sorted(member.name for member in archive.getmembers() if member.isfile())
    images = read_tar_images(data_root / "imagenette/imagenette_val_224.tar", names)
    labels = [IMAGENETTE_WNIDS.index(name.split("/")[1]) for name in names]
    prompts = [f"a photo of a {IMAGENETTE_CLASSES[wnid]}." for wnid in IMAGENETTE_WNIDS]
    scores = oblique_model.similarity(oblique_model.encode(list(images.values())), oblique_model.encode(prompts))
    accuracy = sum(int(p == label) for p, label in zip(scores.argmax(1).tolist(), labels, strict=True)) / len(labels)
    assert results["LocalImagenetteZeroShot"].get_score() == pytest.approx(accuracy)

    photos = read_tar_images(
        data_root / "flickr8k_1k/flickr8k_1k_images_256.tar", [f"images_256/{n}" for n in FLICKR_CAPTIONS]
    )
    image_embeddings = oblique_model.encode(list(photos.values()), convert_to_tensor=True)
    captions = [(index, caption) for index, group in enumerate(FLICKR_CAPTIONS.values()) for caption in group]
    caption_embeddings = oblique_model.encode([caption for _, caption in captions], convert_to_tensor=True)
    similarity = caption_embeddings @ image_embeddings.T
    t2i = [
        ndcg_at_10([str(i) for i in similarity[row].argsort(descending=True).tolist()], {str(index)})
        for row, (index, _) in enumerate(captions)
    ]
    assert results["LocalFlickr8kT2IRetrieval"].get_score() == pytest.approx(sum(t2i) / len(t2i), abs=1e-4)
    i2t = [
        ndcg_at_10(
            [str(captions[row][0]) + f"/{row}" for row in similarity[:, image].argsort(descending=True).tolist()],
            {f"{index}/{row}" for row, (index, _) in enumerate(captions) if index == image},
        )
        for image in range(len(photos))
    ]
    assert results["LocalFlickr8kI2TRetrieval"].get_score() == pytest.approx(sum(i2t) / len(i2t), abs=1e-4)


def test_runner_resolves_names_and_skips_what_a_model_cannot_run(text_model, data_root, caplog):
    tasks = resolve_mteb_tasks(["local"], data_root=data_root, max_samples=4)
    assert [task.metadata.name for task in tasks] == list(LOCAL_TASKS)
    assert {task.metadata.name for task in resolve_mteb_tasks(["STS12", "LocalSICK-R"], data_root=data_root)} == {
        "STS12",
        "LocalSICK-R",
    }
    assert len(resolve_mteb_tasks(benchmarks=["MIEB(lite)"])) > 10  # metadata only: works offline
    with pytest.raises(KeyError, match="Unknown MTEB task"):
        resolve_mteb_tasks(["NoSuchTask"])
    with caplog.at_level(logging.WARNING):
        results = run_mteb(text_model, [tasks[0], tasks[3]], name="tiny/bert", cache_dir=None, show_progress_bar=False)
    assert [result.dataset for result in results] == ["LocalSTSBenchmark"]
    assert results[0].metrics["main_score"] == results[0].metrics["cosine_spearman"]
    assert "Skipping MTEB tasks ['LocalImagenetteZeroShot']" in caplog.text


def test_mock_run_smoke(oblique_model):
    """mteb's own offline check of a model implementation: every compatible mock task (text and image, including
    inputs that combine an image and a text) must pass."""
    outcome = mteb.mock_run(mteb_model(oblique_model, name="tiny/oblique"))
    failures = {
        name: str(status.exception)[:200] for name, status in outcome.items() if type(status).__name__ == "TaskError"
    }
    assert outcome.all_passed, failures  # tasks needing a missing optional dependency count as skipped
    passed = {name for name, status in outcome.items() if type(status).__name__ == "TaskResult"}
    assert len(passed) > 30 and {"MockVisionCentricQA", "MockAny2AnyRetrievalT2I", "MockImageClassification"} <= passed
    ran = {modality: status for status, modality, _ in outcome.modality_summary()}
    assert ran["text"].startswith("✓") and ran["image"].startswith("✓")
