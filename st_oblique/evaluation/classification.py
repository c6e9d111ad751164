"""Zero-shot image classification following CLIP_benchmark's protocol, for any SentenceTransformer.

Each class is represented by the embeddings of its prompts (class names x templates), averaged into one
class embedding; an image is assigned the class whose embedding scores highest. Metrics are CLIP_benchmark's:
``acc1``, ``acc5`` (NaN with fewer than 5 classes) and ``mean_per_class_recall`` (balanced accuracy).

Oblique models (K unit tokens of size d, detected from the model) differ in one place: the template ensemble
is averaged **token-wise** and every token re-projected to the unit sphere (:func:`st_oblique.manifold.token_mean`).
CLIP_benchmark's recipe (normalize, average, renormalize the whole vector) would leave tokens of unequal
norms and silently re-weight the K terms of the similarity. For K=1, and for ordinary models, the two recipes
are the same computation, and the numbers equal CLIP_benchmark's.

Logits are ``100 / K * sum_k <image_k, class_k>``: 100 times the mean per-token cosine, i.e. CLIP's
``100 * cosine`` for K=1.

Example::

    from sentence_transformers import SentenceTransformer
    from st_oblique.evaluation import zeroshot_classification

    model = SentenceTransformer("openai/clip-vit-base-patch32")          # or an oblique model
    metrics = zeroshot_classification(model, ["cat.jpg", "dog.jpg"], [0, 1], ["cat", "dog"],
                                      templates=["a photo of a {c}."])
    # {"acc1": 1.0, "acc5": nan, "mean_per_class_recall": 1.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sklearn.metrics import balanced_accuracy_score
from torch import Tensor

from st_oblique import manifold
from st_oblique.data.templates import DEFAULT_TEMPLATES, Templates, class_prompts
from st_oblique.evaluation.encoding import embedding_num_tokens, encode_images, encode_texts

__all__ = ["LOGIT_SCALE", "classification_metrics", "zeroshot_classification", "zeroshot_classifier", "zeroshot_logits"]

LOGIT_SCALE = 100.0
"""CLIP_benchmark's fixed logit scale (it does not change any metric; it keeps logits comparable)."""


def zeroshot_classifier(
    model: SentenceTransformer,
    classnames: Sequence[str],
    templates: Templates = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 256,
    device: str | None = None,
    show_progress_bar: bool | None = None,
    num_tokens: int | None = None,
) -> Tensor:
    """Class embeddings ``(C, K*d)``: each class's prompt embeddings averaged token-wise, each token unit-norm.

    Args:
        model: any SentenceTransformer with a text input path.
        classnames: the C class names, in label order.
        templates: templates with ``{c}`` (default: OpenAI's 80 ImageNet templates) or ``{classname: [prompts]}``.
        batch_size: texts per forward pass (all prompts go through one length-sorted ``model.encode`` call).
        device: where to run the model.
        show_progress_bar: a tqdm bar over the text batches (None or True: shown; False: none).
        num_tokens: K; default: detected from the model (1 for ordinary models).

    Returns:
        ``(C, D)`` float32 on the CPU. The transpose of CLIP_benchmark's ``zero_shot_classifier`` output when K=1.
    """
    if not classnames:
        raise ValueError("classnames is empty: zero-shot classification needs at least one class.")
    prompts = class_prompts(classnames, templates)
    embeddings = encode_texts(
        model,
        [prompt for class_list in prompts for prompt in class_list],
        batch_size=batch_size,
        device=device,
        show_progress_bar=show_progress_bar,
    )
    num_tokens = num_tokens or embedding_num_tokens(model)
    per_class = torch.split(embeddings, [len(class_list) for class_list in prompts])
    return torch.stack([manifold.token_mean(chunk, dim=0, num_tokens=num_tokens) for chunk in per_class])


def zeroshot_logits(image_embeddings: Tensor, classifier: Tensor, num_tokens: int = 1) -> Tensor:
    """``(N, C)`` logits ``100 / K * sum_k <image_k, class_k>`` with every image token re-projected to unit norm.

    Args:
        image_embeddings: ``(N, K*d)``.
        classifier: ``(C, K*d)`` from :func:`zeroshot_classifier`.
        num_tokens: K (1 for ordinary models: the logits are then CLIP's ``100 * cosine``).
    """
    images = manifold.project(manifold.to_tokens(image_embeddings.float(), num_tokens))
    classes = manifold.to_tokens(classifier.float(), num_tokens)
    return (LOGIT_SCALE / num_tokens) * manifold.similarity(images, classes)


def classification_metrics(
    logits: Tensor, labels: Sequence[int] | Tensor, num_classes: int | None = None
) -> dict[str, float]:
    """CLIP_benchmark's single-label metrics from ``(N, C)`` logits and ``(N,)`` integer labels.

    Returns:
        ``acc1``, ``acc5`` (top-k hit rates; ``acc5`` is NaN when there are fewer than 5 classes, as in
        CLIP_benchmark) and ``mean_per_class_recall`` (scikit-learn's balanced accuracy).
    """
    target = torch.as_tensor(labels, dtype=torch.long)
    if logits.ndim != 2 or logits.shape[0] != target.shape[0]:
        raise ValueError(f"Expected (N, C) logits for N={target.shape[0]} labels, got shape {tuple(logits.shape)}.")
    num_classes = num_classes or logits.shape[1]
    if target.numel() == 0:
        raise ValueError("No samples to evaluate.")
    if int(target.min()) < 0 or int(target.max()) >= logits.shape[1]:
        raise ValueError(
            f"Labels must lie in [0, {logits.shape[1] - 1}], got [{int(target.min())}, {int(target.max())}]."
        )
    topk = (1, 5) if num_classes >= 5 else (1,)
    ranked = logits.topk(max(topk), dim=1, largest=True, sorted=True).indices.t()
    correct = ranked.eq(target.view(1, -1).expand_as(ranked))
    accuracies = [float(correct[:k].reshape(-1).float().sum()) / len(target) for k in topk]
    predictions = logits.argmax(dim=1)
    return {
        "acc1": accuracies[0],
        "acc5": accuracies[1] if len(accuracies) > 1 else float("nan"),
        "mean_per_class_recall": float(balanced_accuracy_score(target.numpy(), predictions.numpy())),
    }


def zeroshot_classification(
    model: SentenceTransformer,
    images: Sequence[Any],
    labels: Sequence[int] | np.ndarray | Tensor,
    classnames: Sequence[str],
    templates: Templates = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 64,
    device: str | None = None,
    num_workers: int = 0,
    show_progress_bar: bool | None = None,
) -> dict[str, float]:
    """Zero-shot classification accuracy of ``model`` on labelled images (CLIP_benchmark's protocol).

    Args:
        model: any SentenceTransformer that encodes both images and texts; oblique models are detected.
        images: N images: PIL images, paths, encoded bytes or uint8 arrays (read lazily, batch by batch).
        labels: N integer labels in ``[0, C)``.
        classnames: the C class names, in label order.
        templates: templates with ``{c}`` (default: OpenAI's 80 ImageNet templates) or ``{classname: [prompts]}``.
        batch_size: images (and texts) per forward pass.
        device: where to run the model.
        num_workers: DataLoader workers that decode and preprocess images.
        show_progress_bar: tqdm bars over the text and image batches (None or True: shown; False: none).

    Returns:
        ``{"acc1", "acc5", "mean_per_class_recall"}`` as floats.
    """
    if len(images) != len(labels):
        raise ValueError(f"Got {len(images)} images but {len(labels)} labels.")
    num_tokens = embedding_num_tokens(model)
    classifier = zeroshot_classifier(
        model,
        classnames,
        templates,
        batch_size=batch_size,
        device=device,
        show_progress_bar=show_progress_bar,
        num_tokens=num_tokens,
    )
    image_embeddings = encode_images(
        model,
        images,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        show_progress_bar=show_progress_bar,
    )
    logits = zeroshot_logits(image_embeddings, classifier, num_tokens)
    return classification_metrics(logits, labels)
