"""Loading a Hugging Face backbone (or the Transformer of a Sentence Transformers folder) as a class-token module,
with the loading options of Sentence Transformers; shared by the builders of the Hugging Face families."""

from __future__ import annotations

import json
from typing import Any

from sentence_transformers.util import load_file_path

from st_oblique.model.loading_options import LoadingOptions
from st_oblique.modules.class_token_transformer import ClassTokenTransformer

__all__ = ["hf_loading", "load_transformer"]


def load_transformer(
    module_class: type[ClassTokenTransformer],
    model_name_or_path: str,
    *,
    num_class_tokens: int | None,
    loading: dict[str, Any],
    max_seq_length: int | None = None,
) -> ClassTokenTransformer:
    """Load a (subclass of) ClassTokenTransformer from a Hugging Face model or a Sentence Transformers folder.

    ``num_class_tokens=None`` keeps what the folder says (1 for a model that is not oblique yet).

    Raises:
        ValueError: the folder is a saved oblique model with another number of class tokens.
    """
    hub = {key: loading[key] for key in ("cache_folder", "revision", "token", "local_files_only") if key in loading}
    init_defaults: dict[str, Any] = {} if num_class_tokens is None else {"num_class_tokens": num_class_tokens}
    if max_seq_length is not None:
        init_defaults["max_seq_length"] = max_seq_length
    module = module_class.load(
        model_name_or_path,
        subfolder=_transformer_subfolder(model_name_or_path, **hub),
        init_defaults=init_defaults,
        **loading,
    )
    if num_class_tokens is not None and module.num_class_tokens != num_class_tokens:
        raise ValueError(
            f"{model_name_or_path} was saved with {module.num_class_tokens} class tokens, but {num_class_tokens} "
            f"were asked for; use num_tokens={module.num_class_tokens} or start from the original backbone."
        )
    if max_seq_length is not None:
        module.max_seq_length = max_seq_length
    return module


def hf_loading(
    loading: LoadingOptions,
    model_kwargs: dict[str, Any] | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    config_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ST's ``Transformer.load`` for one Hugging Face backbone.

    The ``*_kwargs`` arguments add to or override the shared ones of ``loading`` key by key (one tower's own).
    """
    merged = {
        "model_kwargs": {**(loading.get("model_kwargs") or {}), **(model_kwargs or {})},
        "processor_kwargs": {**(loading.get("processor_kwargs") or {}), **(processor_kwargs or {})},
        "config_kwargs": {**(loading.get("config_kwargs") or {}), **(config_kwargs or {})},
    }
    hub = {name: loading.get(name) for name in ("cache_folder", "revision", "token")}
    flags = {name: bool(loading.get(name)) for name in ("local_files_only", "trust_remote_code")}
    return {**hub, **flags, **merged}


_TRANSFORMER_TYPES = {
    "Transformer",
    "CLIPModel",  # Sentence Transformers' legacy CLIP module
    "ClassTokenTransformer",
    "CLIPClassTokenTransformer",
    "ImageClassTokenTransformer",
}


def _transformer_subfolder(model_name_or_path: str, **hub: Any) -> str:
    """Folder of the Transformer module inside a Sentence Transformers model ("" for a plain HF model)."""
    modules_path = load_file_path(model_name_or_path, "modules.json", **hub)
    if modules_path is None:
        return ""
    with open(modules_path, encoding="utf-8") as handle:
        modules = json.load(handle)
    for entry in modules:
        if entry.get("type", "").rsplit(".", 1)[-1] in _TRANSFORMER_TYPES:
            return entry.get("path", "")
    raise ValueError(
        f"{model_name_or_path} is a Sentence Transformers model without a Transformer module "
        f"({[entry.get('type') for entry in modules]}); pass a Hugging Face model instead."
    )
