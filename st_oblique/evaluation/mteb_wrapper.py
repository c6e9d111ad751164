"""MTEB integration: hand any SentenceTransformer (oblique or not, text or image+text) to ``mteb.evaluate``.

Passing a raw SentenceTransformer to mteb 2.x has four traps that :func:`mteb_model` removes:

- mteb declares every SentenceTransformer text-only, so image tasks (MIEB) are refused; here the modalities
  are read from the model (``["image", "text"]`` for a CLIP-like model);
- a model loaded from a local folder has no name and no revision, and mteb's result cache then files it under
  ``no_model_name_available/no_revision_available``, where another model's scores are silently reused; here
  the name is required (or found) and the revision defaults to a fingerprint of the weights;
- the similarity is recorded as ``dot`` for oblique models (the sum of per-token cosines);
- an input holding both an image and a text (mteb's ``it2t``/``it2i`` tasks) is refused by a SentenceTransformer
  whose input module cannot combine them; here it is encoded as the token-wise mean of its image and text
  embeddings (each token re-projected to the unit sphere; for K=1 the normalized sum of the two normalized
  embeddings, close to what mteb's own open_clip wrappers do by adding them).

Example::

    import mteb
    from st_oblique.evaluation import mteb_model

    wrapped = mteb_model(model, name="my-org/oblique-clip")          # revision: a weights fingerprint
    results = mteb.evaluate(wrapped, mteb.get_tasks(tasks=["STSBenchmark"]), cache=mteb.ResultCache("mteb_cache"))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mteb.models import ModelMeta, SentenceTransformerEncoderWrapper
from mteb.models.model_meta import ScoringFunction
from sentence_transformers import SentenceTransformer
from torch.utils.data import DataLoader

from st_oblique import manifold
from st_oblique.evaluation.encoding import embedding_num_tokens, oblique_num_tokens
from st_oblique.evaluation.identity import model_name, weights_fingerprint

__all__ = ["MTEB_MODALITIES", "ImageTextEncoderWrapper", "mteb_model", "mteb_model_meta"]

MTEB_MODALITIES = ("audio", "image", "text", "video")


def mteb_model_meta(model: SentenceTransformer, name: str | None = None, revision: str | None = None) -> ModelMeta:
    """The ``mteb.ModelMeta`` describing ``model``: name, revision, modalities, similarity, sizes.

    Args:
        model: the SentenceTransformer.
        name: the name results are stored under (default: the model's own name, see
            :func:`~st_oblique.evaluation.identity.model_name`; required for a model loaded from a local folder).
        revision: the revision results are stored under (default: a fingerprint of the weights).
    """
    name = name or model_name(model)
    oblique = oblique_num_tokens(model) is not None
    similarity = "dot" if oblique else (model.similarity_fn_name or "cosine")
    modalities = sorted(m for m in model.modalities if isinstance(m, str) and m in MTEB_MODALITIES)
    base = ModelMeta.from_sentence_transformer_model(model)
    return base.model_copy(
        update={
            "name": name,
            "revision": revision or weights_fingerprint(model),
            "modalities": modalities or ["text"],
            "similarity_fn_name": ScoringFunction.from_str(similarity),
            "n_parameters": sum(parameter.numel() for parameter in model.parameters()),
            "embed_dim": model.get_embedding_dimension(),
            "open_weights": True,
        }
    )


class ImageTextEncoderWrapper(SentenceTransformerEncoderWrapper):
    """mteb's SentenceTransformer wrapper that also encodes inputs holding both an image and a text.

    When the model cannot take both in one input (``model.supports(("image", "text"))`` is False), the images and
    the texts are encoded separately and fused token-wise: ``token_mean([image, text])``, each of the K tokens
    re-projected to the unit sphere. Every other input goes through the parent wrapper unchanged.

    Encoding shows a progress bar (over mteb's batches, or Sentence Transformers' over a text corpus) unless
    ``show_progress_bar=False`` here or in mteb's ``encode_kwargs``: mteb's own command line asks for none, and a
    retrieval corpus takes minutes on a CPU.

    Args:
        model: the SentenceTransformer.
        *args, **kwargs: mteb's ``SentenceTransformerEncoderWrapper`` arguments.
        show_progress_bar: the default of every ``encode`` call that does not say.
    """

    def __init__(self, model: SentenceTransformer | str, *args: Any, show_progress_bar: bool = True, **kwargs: Any):
        super().__init__(model, *args, **kwargs)
        self.show_progress_bar = show_progress_bar

    def encode(
        self,
        inputs: DataLoader,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        kwargs.setdefault("show_progress_bar", self.show_progress_bar)
        options = {"task_metadata": task_metadata, "hf_split": hf_split, "hf_subset": hf_subset,
                   "prompt_type": prompt_type, **kwargs}
        columns = list(getattr(inputs.dataset, "column_names", ()))
        if not ({"image", "text"} <= set(columns) and not self.model.supports(("image", "text"))):
            return super().encode(inputs, **options)
        parts = []
        for modality in ("image", "text"):
            kept = [column for column in columns if column == modality or column not in MTEB_MODALITIES]
            loader = DataLoader(
                inputs.dataset.select_columns(kept), batch_size=inputs.batch_size, collate_fn=inputs.collate_fn
            )
            embeddings = super().encode(loader, **options)
            parts.append(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32))
        fused = manifold.token_mean(torch.stack(parts), dim=0, num_tokens=embedding_num_tokens(self.model))
        return fused.numpy()


def mteb_model(
    model: SentenceTransformer,
    name: str | None = None,
    revision: str | None = None,
    *,
    model_prompts: dict[str, str] | None = None,
    show_progress_bar: bool = True,
    **wrapper_kwargs: Any,
) -> ImageTextEncoderWrapper:
    """``model`` wrapped for ``mteb.evaluate`` (text and image tasks), with :func:`mteb_model_meta` attached.

    Args:
        model: any SentenceTransformer; oblique models are detected from their modules.
        name: the name results are stored under (see :func:`mteb_model_meta`).
        revision: the revision results are stored under (default: a fingerprint of the weights).
        model_prompts: mteb's ``{task name / task type / "query" / "document": prompt}`` mapping (default: the
            model's own prompts).
        show_progress_bar: progress bars over every encoding (unless mteb's ``encode_kwargs`` say otherwise).
        **wrapper_kwargs: passed to ``mteb.models.SentenceTransformerEncoderWrapper``.

    Returns:
        An :class:`ImageTextEncoderWrapper` whose ``mteb_model_meta`` has the name, revision, modalities and
        similarity.
    """
    wrapper = ImageTextEncoderWrapper(
        model, model_prompts=model_prompts, show_progress_bar=show_progress_bar, **wrapper_kwargs
    )
    wrapper.mteb_model_meta = mteb_model_meta(model, name=name, revision=revision)
    return wrapper
