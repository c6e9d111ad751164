"""Batched encoding of images and texts with any SentenceTransformer, oblique or not.

The zero-shot harness needs three things from a model: its text embeddings, its image embeddings, and how
many unit tokens an embedding holds (K for an oblique model, 1 for an ordinary one). This module provides
them without any flag the user must remember: K is read from the model's modules.

Images are decoded and preprocessed (the model's own processor, ``model.preprocess``) inside the workers of
a :class:`torch.utils.data.DataLoader`, as CLIP_benchmark does with its transforms, while the forward pass
runs in the main process. With ``num_workers=0`` everything runs in the main process.

Example::

    from st_oblique.evaluation.encoding import encode_images, encode_texts, embedding_num_tokens

    image_embeddings = encode_images(model, ["cat.jpg", "dog.jpg"], batch_size=32)   # (2, D) float32, CPU
    text_embeddings = encode_texts(model, ["a photo of a cat."])                    # (1, D)
    num_tokens = embedding_num_tokens(model)                                        # K, or 1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import batch_to_device, truncate_embeddings
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from st_oblique.data.images import load_image
from st_oblique.modules.shape import oblique_shape

__all__ = ["embedding_num_tokens", "encode_images", "encode_texts", "oblique_num_tokens", "progress_shown"]


def progress_shown(show_progress_bar: bool | None) -> bool:
    """Whether the harness shows a progress bar: always, unless turned off (``show_progress_bar=False``).

    Encoding thousands of images or a retrieval corpus takes minutes on a CPU; the harness never leaves a person
    waiting without a sign of life. (Sentence Transformers' own ``encode`` shows its bar only when logging is at
    INFO, so the harness passes the decision explicitly.)
    """
    return True if show_progress_bar is None else bool(show_progress_bar)


def oblique_num_tokens(model: SentenceTransformer) -> int | None:
    """K if ``model`` produces oblique embeddings (K unit tokens of size d), else None.

    Read from the model's :class:`~st_oblique.ObliquePooling` modules (:func:`st_oblique.modules.shape.oblique_shape`). When
    ``model.truncate_dim`` is set it must keep whole tokens; K is then the number of tokens kept.

    Raises:
        ValueError: ``truncate_dim`` cuts through a token (per-token unit norm would be lost).
    """
    shape = oblique_shape(model)
    return None if shape is None else shape.kept_tokens(getattr(model, "truncate_dim", None))


def embedding_num_tokens(model: SentenceTransformer) -> int:
    """The number of unit tokens in one embedding: K for an oblique model, 1 for an ordinary one.

    Scores computed on the token view ``(N, K, d)`` with this K reduce to CLIP's cosine similarity when K=1.
    """
    return oblique_num_tokens(model) or 1


def encode_texts(
    model: SentenceTransformer,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    device: str | None = None,
    show_progress_bar: bool | None = None,
) -> Tensor:
    """Text embeddings ``(N, D)`` as float32 on the CPU (``model.encode``: length-sorted batches, model prompts).

    ``show_progress_bar``: Sentence Transformers' bar over the text batches; None or True: shown (see
    :func:`progress_shown`).
    """
    if not texts:
        return torch.empty(0, model.get_embedding_dimension() or 0)
    embeddings = model.encode(
        list(texts),
        batch_size=batch_size,
        device=device,
        show_progress_bar=progress_shown(show_progress_bar),
        convert_to_tensor=True,
    )
    return embeddings.float().cpu()


def encode_images(
    model: SentenceTransformer,
    images: Sequence[Any],
    *,
    batch_size: int = 64,
    device: str | None = None,
    num_workers: int = 0,
    show_progress_bar: bool | None = None,
    desc: str = "Encoding images",
) -> Tensor:
    """Image embeddings ``(N, D)`` as float32 on the CPU, in the order of ``images``.

    Args:
        model: any SentenceTransformer with an image input path.
        images: a sequence (indexable, with ``len``) of anything :func:`st_oblique.data.images.load_image` reads; it is read lazily, one
            batch at a time, so a dataset reader may decode on access.
        batch_size: images per forward pass.
        device: where to run the model (moves the model, as ``model.encode(device=...)`` does); default: the
            model's device.
        num_workers: DataLoader worker processes that decode and preprocess images (0: the main process).
        show_progress_bar: a tqdm bar over batches; None or True: shown (see :func:`progress_shown`).
        desc: the progress bar's label.

    Raises:
        ValueError: the model has no image input path.
    """
    if not model.supports("image"):
        raise ValueError(
            f"This model handles {model.modalities} inputs, not images. Zero-shot image classification and retrieval "
            "need an image-text model (e.g. a CLIP-like model or st_oblique.oblique_clip)."
        )
    show_progress_bar = progress_shown(show_progress_bar)
    if device is not None:
        model.to(device)
    model.eval()
    target = model.device
    loader = DataLoader(
        images,  # any sequence is a map-style dataset; items stay raw until the collate function decodes them
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_Preprocess(model),
    )
    truncate_dim = getattr(model, "truncate_dim", None)
    chunks = []
    with torch.inference_mode():
        for features in tqdm(loader, desc=desc, disable=not show_progress_bar):
            output = model(batch_to_device(features, target))["sentence_embedding"]
            chunks.append(truncate_embeddings(output, truncate_dim).float().cpu())
    if not chunks:
        return torch.empty(0, model.get_embedding_dimension() or 0)
    return torch.cat(chunks)


class _Preprocess:
    """Collate function: decode a batch of images and run the model's processor on it (in the worker)."""

    def __init__(self, model: SentenceTransformer) -> None:
        self.model = model

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        return self.model.preprocess([load_image(item) for item in items])
