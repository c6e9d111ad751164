"""One-line builders that turn pretrained backbones into oblique SentenceTransformer models."""

from __future__ import annotations

import json
from typing import Any

from sentence_transformers.util import load_file_path

from st_oblique.model import ObliqueSentenceTransformer
from st_oblique.modules.pooling import ObliquePooling, TokenSource
from st_oblique.modules.text_class_tokens import ClassTokenTransformer


def oblique_text_model(
    model_name_or_path: str,
    num_tokens: int = 16,
    token_dim: int = 32,
    token_source: TokenSource = "first",
    *,
    per_token_projection: bool = True,
    layer_norm: bool = True,
    max_seq_length: int | None = None,
    device: str | None = None,
    cache_folder: str | None = None,
    revision: str | None = None,
    token: bool | str | None = None,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    config_kwargs: dict[str, Any] | None = None,
) -> ObliqueSentenceTransformer:
    """An oblique text embedding model from a bidirectional Hugging Face text encoder.

    With ``token_source="first"`` (default, the paper's design) the encoder gets K class tokens
    (:class:`~st_oblique.modules.ClassTokenTransformer` prepends K−1 copies of ``[CLS]``) and
    :class:`~st_oblique.ObliquePooling` turns each into a unit vector of size d. With ``"attention"`` or
    ``"split"`` the encoder is left unchanged and the K tokens come from the pooling head.

    The pooling head is new (randomly initialised): train the model (``ObliqueContrastiveLoss``) before use.

    Args:
        model_name_or_path: Hub id or local path of a Hugging Face encoder, or of a Sentence Transformers model
            (its Transformer is used; its pooling and Normalize modules are replaced).
        num_tokens: K (default 16, as in the paper).
        token_dim: d (default 32, as in the paper; embeddings have K*d floats).
        token_source: ``"first"``, ``"attention"`` or ``"split"`` (see :class:`ObliquePooling`).
        per_token_projection: separate projection per token (default) or one shared projection.
        layer_norm: LayerNorm before the projection.
        max_seq_length: text truncation length (class tokens come on top); default: the model's.
        device: where to put the model (default: ST's choice).
        cache_folder, revision, token, local_files_only, trust_remote_code: Hub loading options of the backbone.
        model_kwargs, processor_kwargs, config_kwargs: passed to the Hugging Face ``from_pretrained`` calls.

    Returns:
        An :class:`~st_oblique.ObliqueSentenceTransformer` with ``similarity_fn_name="dot"``; embeddings have
        shape ``(N, K*d)``.

    Example::

        import st_oblique

        model = st_oblique.oblique_text_model("sentence-transformers/all-MiniLM-L6-v2", num_tokens=16, token_dim=32)
        embeddings = model.encode(["A man is playing a guitar.", "A woman is slicing an onion."])  # (2, 512)
    """
    if token_source == "last":
        raise ValueError(
            "token_source='last' is for causal text towers with class positions after EOS (st_oblique.oblique_clip); "
            "a bidirectional text encoder uses 'first' (class tokens prepended), 'attention' or 'split'."
        )
    hub = {"cache_folder": cache_folder, "revision": revision, "token": token, "local_files_only": local_files_only}
    subfolder = _transformer_subfolder(model_name_or_path, **hub)
    init_defaults: dict[str, Any] = {"num_class_tokens": num_tokens if token_source == "first" else 1}
    if max_seq_length is not None:
        init_defaults["max_seq_length"] = max_seq_length
    backbone = ClassTokenTransformer.load(
        model_name_or_path,
        subfolder=subfolder,
        trust_remote_code=trust_remote_code,
        model_kwargs=model_kwargs,
        processor_kwargs=processor_kwargs,
        config_kwargs=config_kwargs,
        init_defaults=init_defaults,
        **hub,
    )
    if max_seq_length is not None:
        backbone.max_seq_length = max_seq_length
    pooling = ObliquePooling(
        backbone.get_embedding_dimension(),
        num_tokens=num_tokens,
        token_dim=token_dim,
        token_source=token_source,
        per_token_projection=per_token_projection,
        layer_norm=layer_norm,
    )
    model = ObliqueSentenceTransformer(modules=[backbone, pooling], device=device, similarity_fn_name="dot")
    model.model_card_data.base_model = model_name_or_path
    return model


def _transformer_subfolder(model_name_or_path: str, **hub: Any) -> str:
    """Folder of the Transformer module inside a Sentence Transformers model ("" for a plain HF model)."""
    modules_path = load_file_path(model_name_or_path, "modules.json", **hub)
    if modules_path is None:
        return ""
    with open(modules_path, encoding="utf-8") as handle:
        modules = json.load(handle)
    for entry in modules:
        if entry.get("type", "").rsplit(".", 1)[-1] in {"Transformer", "ClassTokenTransformer"}:
            return entry.get("path", "")
    raise ValueError(
        f"{model_name_or_path} is a Sentence Transformers model without a Transformer module "
        f"({[entry.get('type') for entry in modules]}); pass a Hugging Face text encoder instead."
    )
