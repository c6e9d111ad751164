"""What a model that ranks at random scores on a zero-shot dataset: the chance levels plots draw as a line.

Example::

    from st_oblique.evaluation.chance import chance_levels

    chance_levels(load_dataset("imagenette"))   # {"acc1": 0.1, "acc5": 0.5, "mean_per_class_recall": 0.1}
"""

from __future__ import annotations

from collections.abc import Sequence

from st_oblique.data.datasets import ClassificationDataset, RetrievalDataset
from st_oblique.evaluation.retrieval import DEFAULT_RECALL_K

__all__ = ["chance_levels"]


def chance_levels(
    data: ClassificationDataset | RetrievalDataset, recall_k: Sequence[int] = DEFAULT_RECALL_K
) -> dict[str, float]:
    """``{metric: chance level}`` of the harness's metrics on ``data``.

    Classification over C classes: ``acc1`` and ``mean_per_class_recall`` 1/C, ``acc5`` min(1, 5/C). Retrieval over
    N images: ``image_retrieval_recall@k`` (text -> image, one relevant image) k/N; ``text_retrieval_recall@k``
    (image -> text) k/N as well, exact with one caption per image and close with several of equal number (then
    k of the N·c captions hit one of the image's c captions with probability ≈ k·c/(N·c)).
    """
    if isinstance(data, ClassificationDataset):
        classes = len(data.classnames)
        return {"acc1": 1.0 / classes, "acc5": min(1.0, 5.0 / classes), "mean_per_class_recall": 1.0 / classes}
    images = len(data)
    levels = {}
    for k in recall_k:
        levels[f"image_retrieval_recall@{k}"] = min(1.0, k / images)
        levels[f"text_retrieval_recall@{k}"] = min(1.0, k / images)
    return levels
