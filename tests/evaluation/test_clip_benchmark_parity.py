"""At K=1 the zero-shot harness gives exactly CLIP_benchmark's numbers (its own metric code, run on the same
model, images, class names and templates through CLIPBenchmarkModel)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from st_oblique.data.datasets import ClassificationDataset
from st_oblique.evaluation.classification import zeroshot_classification, zeroshot_classifier, zeroshot_logits
from st_oblique.evaluation.clip_benchmark_adapter import CLIPBenchmarkModel, clip_benchmark_numpy2_fix
from st_oblique.evaluation.encoding import encode_images
from st_oblique.evaluation.retrieval import zeroshot_retrieval

clip_benchmark_classification = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
clip_benchmark_retrieval = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")

TEMPLATES = ["a photo of the number {c}.", "a drawing of a {c}", "{c}", "the digit {c} on a red car"]
WORDS = ["dog", "cat", "park", "beach", "car", "guitar", "ball", "horse"]


class TransformedImages(Dataset):
    """CLIP_benchmark's dataset contract: (transformed image, target) items and a ``classes`` attribute."""

    def __init__(self, images, targets, transform, classes=None) -> None:
        self.images, self.targets, self.transform, self.classes = images, targets, transform, classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(self.images[index]), self.targets[index]


def clip_benchmark_classify(model, data: ClassificationDataset, templates) -> tuple[dict, torch.Tensor]:
    adapter = CLIPBenchmarkModel(model)
    loader = DataLoader(TransformedImages(data.images, data.labels, adapter.transform, data.classnames), batch_size=32)
    with clip_benchmark_numpy2_fix(), torch.no_grad():
        metrics = clip_benchmark_classification.evaluate(
            adapter, loader, adapter.tokenizer, data.classnames, templates, "cpu", amp=False
        )
        classifier = clip_benchmark_classification.zero_shot_classifier(
            adapter, adapter.tokenizer, data.classnames, templates, "cpu", amp=False
        )
        logits, _ = clip_benchmark_classification.run_classification(adapter, classifier, loader, "cpu", amp=False)
    return metrics, classifier, logits


@pytest.mark.parametrize("fixture", ["clip_model", "oblique_k1_model"])
def test_classification_equals_clip_benchmark_at_k1(request, fixture, digits):
    model = request.getfixturevalue(fixture)
    ours = zeroshot_classification(model, digits.images, digits.labels, digits.classnames, TEMPLATES, batch_size=32)
    theirs, their_classifier, their_logits = clip_benchmark_classify(model, digits, TEMPLATES)

    assert ours == theirs
    classifier = zeroshot_classifier(model, digits.classnames, TEMPLATES)
    torch.testing.assert_close(classifier, their_classifier.T, atol=1e-6, rtol=0)
    logits = zeroshot_logits(encode_images(model, digits.images), classifier, num_tokens=1)
    torch.testing.assert_close(logits, their_logits, atol=1e-4, rtol=0)


def test_fewer_than_five_classes_gives_nan_acc5_like_clip_benchmark(clip_model, digits):
    keep = [index for index, label in enumerate(digits.labels) if label < 4]
    small = ClassificationDataset(
        "digits0-3", [digits.images[i] for i in keep], [digits.labels[i] for i in keep], digits.classnames[:4]
    )
    ours = zeroshot_classification(clip_model, small.images, small.labels, small.classnames, TEMPLATES)
    theirs, _, _ = clip_benchmark_classify(clip_model, small, TEMPLATES)
    assert math.isnan(ours["acc5"]) and math.isnan(theirs["acc5"])
    assert ours["acc1"] == theirs["acc1"] and ours["mean_per_class_recall"] == theirs["mean_per_class_recall"]


def caption_groups(labels: list[int]) -> list[list[str]]:
    """One to three captions per image, differing between images."""
    return [
        [f"a {WORDS[(i + j) % len(WORDS)]} and the number {label}" for j in range(1 + i % 3)]
        for i, label in enumerate(labels)
    ]


@pytest.mark.parametrize("fixture", ["clip_model", "oblique_k1_model", "oblique_model"])
def test_retrieval_equals_clip_benchmark(request, fixture, digits):
    """Equal at K=1 by construction; also for K>1, since whole-vector normalization of K unit tokens only divides
    every score by sqrt(K) and leaves rankings unchanged."""
    model = request.getfixturevalue(fixture)
    captions = caption_groups(digits.labels)
    ours = zeroshot_retrieval(model, digits.images, captions, batch_size=32)

    adapter = CLIPBenchmarkModel(model)
    loader = DataLoader(
        TransformedImages(digits.images, captions, adapter.transform),
        batch_size=32,
        collate_fn=lambda batch: (torch.stack([item[0] for item in batch]), [item[1] for item in batch]),
    )
    with torch.no_grad():
        theirs = clip_benchmark_retrieval.evaluate(
            adapter, loader, adapter.tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10]
        )
    assert ours == theirs
    assert set(ours) == {f"{kind}_retrieval_recall@{k}" for kind in ("image", "text") for k in (1, 5, 10)}
