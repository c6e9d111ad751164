"""Zero-shot image-text retrieval (recall@k) following CLIP_benchmark's protocol, for any SentenceTransformer.

Every image has one or more captions (Flickr and COCO have five). Scores are the model's similarity on the
token view (the sum of per-token cosines for an oblique model, the cosine for an ordinary one). Recall@k is
CLIP's hit rate: a query counts as found when **any** of its positives is among the top k.

Key names are CLIP_benchmark's: ``image_retrieval_recall@k`` is text -> image retrieval (a caption retrieves
its image) and ``text_retrieval_recall@k`` is image -> text retrieval (an image retrieves one of its captions).

Example::

    from st_oblique.evaluation import zeroshot_retrieval

    metrics = zeroshot_retrieval(model, ["a.jpg", "b.jpg"], [["a dog runs.", "a brown dog."], ["a red car."]])
    # {"image_retrieval_recall@1": ..., "text_retrieval_recall@1": ..., ..., "text_retrieval_recall@10": ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor

from st_oblique import manifold
from st_oblique.evaluation.encoding import embedding_num_tokens, encode_images, encode_texts

__all__ = ["DEFAULT_RECALL_K", "recall_at_k", "retrieval_metrics", "retrieval_scores", "zeroshot_retrieval"]

DEFAULT_RECALL_K: tuple[int, ...] = (1, 5, 10)


def retrieval_scores(text_embeddings: Tensor, image_embeddings: Tensor, num_tokens: int = 1) -> Tensor:
    """``(T, N)`` similarities of every caption with every image, on unit tokens.

    Args:
        text_embeddings: ``(T, K*d)``.
        image_embeddings: ``(N, K*d)``.
        num_tokens: K (1 for ordinary models: the scores are cosines, as in CLIP_benchmark).
    """
    texts = manifold.project(manifold.to_tokens(text_embeddings.float(), num_tokens))
    images = manifold.project(manifold.to_tokens(image_embeddings.float(), num_tokens))
    return manifold.similarity(texts, images)


def recall_at_k(scores: Tensor, positives: Tensor, k: int, chunk_size: int = 4096) -> Tensor:
    """Per-query hit (1.0 when any positive is in the top k) for ``(Q, N)`` scores and ``(Q, N)`` boolean positives.

    ``k`` larger than the number of candidates counts every candidate. Rows are processed in chunks to bound memory.
    """
    k = min(k, scores.shape[1])
    hits = []
    for start in range(0, scores.shape[0], chunk_size):
        top = scores[start : start + chunk_size].topk(k, dim=1).indices
        hits.append(positives[start : start + chunk_size].gather(1, top).any(dim=1).float())
    return torch.cat(hits) if hits else torch.empty(0)


def retrieval_metrics(
    scores: Tensor, caption_image_index: Tensor, recall_k: Sequence[int] = DEFAULT_RECALL_K
) -> dict[str, float]:
    """CLIP_benchmark's retrieval metrics from ``(T, N)`` caption-image scores.

    Args:
        scores: ``(T, N)`` similarities.
        caption_image_index: ``(T,)`` the image each caption belongs to.
        recall_k: the k values.
    """
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(scores.shape[0]), caption_image_index] = True
    metrics = {}
    for k in recall_k:
        metrics[f"image_retrieval_recall@{k}"] = recall_at_k(scores, positives, k).mean().item()
        metrics[f"text_retrieval_recall@{k}"] = recall_at_k(scores.T, positives.T, k).mean().item()
    return metrics


def zeroshot_retrieval(
    model: SentenceTransformer,
    images: Sequence[Any],
    captions: Sequence[Sequence[str]],
    *,
    batch_size: int = 64,
    recall_k: Sequence[int] = DEFAULT_RECALL_K,
    device: str | None = None,
    num_workers: int = 0,
    show_progress_bar: bool | None = None,
) -> dict[str, float]:
    """Text -> image and image -> text recall@k of ``model`` on images with captions.

    Args:
        model: any SentenceTransformer that encodes both images and texts; oblique models are detected.
        images: N images (PIL images, paths, encoded bytes or uint8 arrays), read lazily.
        captions: N lists of captions, one list per image (each with at least one caption).
        batch_size: images (and texts) per forward pass.
        recall_k: the k values (default 1, 5, 10).
        device: where to run the model.
        num_workers: DataLoader workers that decode and preprocess images.
        show_progress_bar: tqdm bars over the text and image batches (None or True: shown; False: none).

    Returns:
        ``image_retrieval_recall@k`` (text -> image) and ``text_retrieval_recall@k`` (image -> text) for each k.
    """
    if len(images) != len(captions):
        raise ValueError(f"Got {len(images)} images but {len(captions)} caption lists; give one list per image.")
    if isinstance(captions, str) or any(isinstance(group, str) or not group for group in captions):
        raise ValueError(
            "captions must be one non-empty list of strings per image, e.g. [['a dog.', 'a puppy.'], ...]."
        )
    texts = [caption for group in captions for caption in group]
    caption_image_index = torch.tensor([index for index, group in enumerate(captions) for _ in group])
    text_embeddings = encode_texts(
        model, texts, batch_size=batch_size, device=device, show_progress_bar=show_progress_bar
    )
    image_embeddings = encode_images(
        model,
        images,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        show_progress_bar=show_progress_bar,
    )
    scores = retrieval_scores(text_embeddings, image_embeddings, embedding_num_tokens(model))
    return retrieval_metrics(scores, caption_image_index, recall_k)
