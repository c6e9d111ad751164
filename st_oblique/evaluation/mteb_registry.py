"""Put an st-oblique model into mteb's model registry, so that mteb's own entry points (``mteb.get_model``,
``mteb.evaluate(meta, ...)``, the ``mteb run`` command line) can load and evaluate it.

``mteb.get_model(name)`` knows only the models of its registry and the Hub; a local folder is refused ("No model
implementation is available"), and for a Hub id mteb loads with a plain ``SentenceTransformer``, which refuses
st-oblique's module classes without ``trust_remote_code``. :func:`register_mteb_model` describes the model to mteb
(name, revision, modalities, ``dot`` similarity, the whole-token truncations K·d, (K/2)·d, ... as ``embed_dim``,
parameters, memory) with a loader that loads st-oblique's modules through
:func:`~st_oblique.evaluation.model_loading.load_model` (no ``trust_remote_code`` needed) and wraps the model exactly as
:func:`~st_oblique.evaluation.mteb_model` does, so scores equal ``st-oblique eval --mteb-task``.

Example::

    import mteb
    from st_oblique.evaluation import register_mteb_model

    meta = register_mteb_model("runs/lit-oblique")            # name "local/lit-oblique", revision: weights fingerprint
    model = mteb.get_model(meta.name)                          # or mteb.get_model(meta.name, embed_dim=256): 8 tokens
    results = mteb.evaluate(model, mteb.get_tasks(tasks=["STS16"]))

    register_mteb_model("my-org/oblique-clip", revision="main")   # a Hub id: the name is the id
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from mteb.models import ModelMeta
from sentence_transformers import SentenceTransformer

from st_oblique import _compat
from st_oblique.evaluation.identity import model_name
from st_oblique.evaluation.model_loading import load_model
from st_oblique.evaluation.mteb_wrapper import ImageTextEncoderWrapper, mteb_model_meta
from st_oblique.modules.shape import oblique_shape

__all__ = ["LOCAL_NAMESPACE", "is_registered_by_st_oblique", "load_registered_model", "register_mteb_model"]

LOCAL_NAMESPACE = "local"
"""The organization part of the default mteb name of a model registered from a local folder (``local/<folder>``)."""

_IN_MEMORY_MODELS: dict[str, SentenceTransformer] = {}
"""Registered model objects by mteb name. mteb deep-copies a ``ModelMeta`` (and so its loader) every time it loads a
model, so the loader refers to a model object by name instead of holding it."""


def register_mteb_model(
    model_or_path_or_hub_id: SentenceTransformer | str | Path,
    name: str | None = None,
    revision: str | None = None,
    *,
    show_progress_bar: bool = True,
) -> ModelMeta:
    """Add an st-oblique model (or any SentenceTransformer) to mteb's model registry and return its ``ModelMeta``.

    After this, ``mteb.get_model(meta.name)``, ``mteb.evaluate(meta, tasks)`` and ``mteb run -m <meta.name>`` (run
    in the same process, as ``st-oblique mteb`` does) load the model with st-oblique's loader: no
    ``trust_remote_code``, ``modalities`` from the model (``["image", "text"]`` for an image-text model),
    ``similarity_fn_name="dot"`` for oblique models, and ``embed_dim`` listing the whole-token truncations
    ``[K·d, (K/2)·d, ..., d]`` (``mteb.get_model(name, embed_dim=(K/2)·d)`` keeps the first K/2 unit tokens).

    The model is loaded once here (to read its shape and size and fingerprint its weights) and again by every
    ``mteb.get_model``; a model object is used as it is (moved only when mteb asks for a device).

    Args:
        model_or_path_or_hub_id: a SentenceTransformer, a saved model folder, or a Hub id.
        name: mteb's name for the model, ``"organization/model_name"`` (what results are stored under). Default: the
            Hub id; ``local/<folder name>`` for a folder; the model card's name for a model object.
        revision: for a Hub id, the revision to load (a branch, tag or commit), also the revision results are stored
            under; for a folder or a model object, only the latter. Default: a fingerprint of the weights
            (:func:`~st_oblique.evaluation.weights_fingerprint`), so two checkpoints never share cached scores.
        show_progress_bar: the loaded model shows a progress bar over every encoding mteb asks for (mteb's own
            command line does not ask for one).

    Returns:
        The registered ``mteb.ModelMeta``.

    Raises:
        ValueError: ``name`` is already one of mteb's own models (pass another ``name``), it has no ``"/"``, no name
            could be found for a model object, or the folder / Hub id holds no SentenceTransformer.
    """
    source = model_or_path_or_hub_id
    if isinstance(source, SentenceTransformer):
        model = source
        name = name or _object_name(model)
        load_revision = None
    else:
        source = str(source)
        is_folder = Path(source).is_dir()
        model = load_model(source, device="cpu", revision=None if is_folder else revision)
        name = name or (f"{LOCAL_NAMESPACE}/{Path(source).resolve().name}" if is_folder else source)
        load_revision = None if is_folder else revision
    if "/" not in name:
        raise ValueError(
            f"register_mteb_model: name={name!r} must be 'organization/model_name' (mteb's format), e.g. "
            f"'{LOCAL_NAMESPACE}/{name}'."
        )
    existing = _compat.mteb_registered_model_meta(name)
    if existing is not None and not is_registered_by_st_oblique(existing):
        raise ValueError(
            f"register_mteb_model: {name!r} is one of mteb's own models; registering this model under that name would "
            "replace it. Pass another name, e.g. name='my-org/oblique-model'."
        )

    if isinstance(source, SentenceTransformer):
        _IN_MEMORY_MODELS[name] = model
        loader = functools.partial(load_registered_model, in_memory=True, show_progress_bar=show_progress_bar)
    else:
        _IN_MEMORY_MODELS.pop(name, None)
        loader = functools.partial(
            load_registered_model, source=source, load_revision=load_revision, show_progress_bar=show_progress_bar
        )
    meta = _registry_meta(
        model, name=name, revision=revision, loader=loader, hub_id=None if _is_local(source) else source
    )
    _compat.register_mteb_model_meta(meta)
    return meta


def load_registered_model(
    name: str,
    revision: str | None = None,
    *,
    source: str | None = None,
    load_revision: str | None = None,
    in_memory: bool = False,
    device: str | None = None,
    embed_dim: int | None = None,
    model_prompts: dict[str, str] | None = None,
    show_progress_bar: bool = True,
) -> ImageTextEncoderWrapper:
    """mteb's loader of a model registered with :func:`register_mteb_model` (``ModelMeta.loader``).

    mteb calls it as ``loader(name, revision=meta.revision, device=..., embed_dim=...)``; ``revision`` is the one
    results are stored under (possibly a weights fingerprint), so the Hub revision to load is bound separately
    (``load_revision``).

    Args:
        name: the registered name.
        revision: the registered revision (unused for loading).
        source: the folder or Hub id to load; ``in_memory``: the registered model object instead.
        device: where to put the model (mteb's ``get_model(..., device=)``).
        embed_dim: keep the first ``embed_dim`` dimensions (whole tokens only, see the meta's ``embed_dim`` list).
        model_prompts: mteb's prompt mapping (default: the model's own prompts).
        show_progress_bar: progress bars over the encodings (unless mteb's call turns them off).
    """
    if in_memory:
        model = _IN_MEMORY_MODELS[name]
        if device is not None and str(model.device) != str(device):
            model.to(device)
        if embed_dim is not None and embed_dim != model.get_embedding_dimension():
            # a shallow copy shares the weights; only its truncate_dim differs from the registered object's
            model = copy.copy(model)
            model.truncate_dim = embed_dim
    else:
        model = load_model(str(source), device=device, revision=load_revision)
        if embed_dim is not None:
            model.truncate_dim = embed_dim
    return ImageTextEncoderWrapper(model, model_prompts=model_prompts, show_progress_bar=show_progress_bar)


def _registry_meta(
    model: SentenceTransformer, *, name: str, revision: str | None, loader: Any, hub_id: str | None
) -> ModelMeta:
    base = mteb_model_meta(model, name=name, revision=revision)
    shape = oblique_shape(model)
    n_parameters = sum(parameter.numel() for parameter in model.parameters())
    memory_bytes = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    updates: dict[str, Any] = {
        "loader": loader,
        "loader_kwargs": {},
        "n_parameters": n_parameters,
        "memory_usage_mb": round(memory_bytes / 2**20, 2),
        "embed_dim": shape.truncations() if shape is not None else model.get_embedding_dimension(),
        "max_tokens": model.max_seq_length,
        "framework": ["Sentence Transformers", "PyTorch"],
        "open_weights": True,
        "reference": f"https://huggingface.co/{hub_id}" if hub_id else None,
    }
    return base.model_copy(update=updates)


def _object_name(model: SentenceTransformer) -> str:
    name = model.model_card_data.model_name or model.model_card_data.model_id
    if name:
        return str(name)
    try:
        found = model_name(model)
    except ValueError:
        found = None
    raise ValueError(
        "register_mteb_model: this model object has no name of its own; pass name='organization/model_name' "
        + (
            f"(its base model {found!r} would clash with that model's entry)."
            if found
            else "(results are stored under it)."
        )
    )


def _is_local(source: SentenceTransformer | str) -> bool:
    return isinstance(source, SentenceTransformer) or Path(source).is_dir()


def is_registered_by_st_oblique(meta: ModelMeta) -> bool:
    """Whether ``meta`` was registered by :func:`register_mteb_model` (not one of mteb's own models)."""
    return getattr(meta.loader, "func", None) is load_registered_model
