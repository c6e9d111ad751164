"""Names and revisions that identify a model's weights, so evaluation results never mix two models.

MTEB caches scores under ``{model name}/{revision}``: an unnamed model is cached as ``no_model_name_available``
and silently reuses another unnamed model's scores. :func:`weights_fingerprint` gives every distinct set of
weights its own revision, and :func:`model_name` finds a name or says how to give one.

Example::

    from st_oblique.evaluation.identity import model_name, weights_fingerprint

    weights_fingerprint(model)        # "w-3f2a9c0d41b7", changes whenever any weight changes
    model_name(model, default="x")    # the model card's name, else the Hub id it was loaded from, else "x"
"""

from __future__ import annotations

import hashlib

import torch
from sentence_transformers import SentenceTransformer

__all__ = ["model_name", "weights_fingerprint"]


def weights_fingerprint(model: SentenceTransformer, length: int = 12) -> str:
    """``"w-<hex>"``: a BLAKE2 hash of every parameter and buffer (names, shapes, dtypes and values) and the module
    list, so two checkpoints share a fingerprint only if they compute the same embeddings."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr([type(module).__name__ for module in model]).encode())
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return "w-" + digest.hexdigest()[:length]


def model_name(model: SentenceTransformer, default: str | None = None) -> str:
    """The model's name: ``model_card_data.model_name``, its ``model_id``, its base model (a dual encoder's two
    joined by ``" + "``), else ``default``.

    Raises:
        ValueError: no name is known and no ``default`` is given.
    """
    card = model.model_card_data
    base_model = " + ".join(card.base_model) if isinstance(card.base_model, list) else card.base_model
    for candidate in (card.model_name, card.model_id, base_model, default):
        if candidate:
            return str(candidate)
    raise ValueError(
        "This model has no name (it was built in code or loaded from a local folder). Evaluation results are "
        "stored under the model's name, so pass one explicitly (e.g. name='my-org/oblique-minilm')."
    )
