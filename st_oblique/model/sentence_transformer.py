"""ObliqueSentenceTransformer: a SentenceTransformer that loads st-oblique models without trust_remote_code."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from sentence_transformers import SentenceTransformerModelCardData
from sentence_transformers.util import import_from_string
from torch import nn

from st_oblique._compat import (
    SentenceTransformerHooks,
    loaded_model_card,
    set_loaded_model_card,
    similarity_fn_name_if_set,
)
from st_oblique._version import __version__
from st_oblique.data.images import check_encode_inputs
from st_oblique.errors import CheckpointError, ObliqueLoadError, TrainingDataError
from st_oblique.model.card import ObliqueModelCardData, has_unloadable_usage
from st_oblique.model.files import (
    check_model_folder,
    explain_load_failure,
    find_nonfinite_tensor,
    local_model_folder,
    missing_model_message,
)
from st_oblique.model.hub_access import check_hub_access
from st_oblique.model.hub_errors import explain_push_errors
from st_oblique.model.hub_ids import is_hub_model_id
from st_oblique.modules import MODULE_CLASSES
from st_oblique.modules.shape import check_truncate_dim, oblique_shape

PACKAGE = "st-oblique"
MIN_READER_VERSION = "0.2.0"
"""Oldest st-oblique release that can read what this release saves (written as a model requirement): 0.2.0 moved
the logit scale into ObliquePooling (new config keys and ``temperature.*`` tensors, which 0.1.0 refuses)."""

MODULE_CLASS_REFS: tuple[str, ...] = tuple(f"{module}.{name}" for name, module in MODULE_CLASSES.items())
"""The ``modules.json`` types of st-oblique's module classes (from the registry
:data:`st_oblique.modules.MODULE_CLASSES`). They have at least two dots, so a file in a model repository can never
shadow them (ST's dynamic-module loader rejects such refs)."""

RENAMED_MODULE_CLASS_REFS: dict[str, str] = {
    "st_oblique.modules.text_class_tokens.ClassTokenTransformer":
        "st_oblique.modules.class_token_transformer.ClassTokenTransformer",
    "st_oblique.modules.clip_class_tokens.CLIPClassTokenTransformer":
        "st_oblique.modules.clip_class_token_transformer.CLIPClassTokenTransformer",
    "st_oblique.modules.image_class_tokens.ImageClassTokenTransformer":
        "st_oblique.modules.image_class_token_transformer.ImageClassTokenTransformer",
}
"""``modules.json`` types written by st-oblique 0.1.0 development builds, before their files were renamed."""


class StObliqueModuleClasses(Mapping[str, type]):
    """Maps ``modules.json`` types under ``st_oblique.`` to the installed classes (imported on demand).

    ST consults this mapping before its ``trust_remote_code`` gate, which exists to stop a model
    configuration from running code the user did not choose. Here the user chose st-oblique by calling its
    loader, and only classes of the installed st-oblique package resolve; every other type (a backbone's
    remote code included) still goes through ST's gate.
    """

    prefix = "st_oblique."

    def __getitem__(self, class_ref: str) -> type:
        if not class_ref.startswith(self.prefix):
            raise KeyError(class_ref)
        class_ref = RENAMED_MODULE_CLASS_REFS.get(class_ref, class_ref)
        try:
            return import_from_string(class_ref)
        except ImportError as error:
            raise ObliqueLoadError(
                f"This model uses the module class {class_ref!r}, which st-oblique {__version__} does not have. "
                'It was probably saved by a newer release: pip install -U "st-oblique".'
            ) from error

    def __iter__(self) -> Iterator[str]:
        return iter(MODULE_CLASS_REFS)

    def __len__(self) -> int:
        return len(MODULE_CLASS_REFS)


class ObliqueSentenceTransformer(SentenceTransformerHooks):
    """A :class:`~sentence_transformers.SentenceTransformer` for oblique models.

    It is an ordinary ``SentenceTransformer`` (``encode``, ``similarity``, ``fit``, the trainer, MTEB all work
    unchanged, with the same arguments) with these differences:

    - it loads models that use st-oblique's modules **without** ``trust_remote_code=True``, trusting only the
      classes of the installed st-oblique package (a backbone's remote code still needs the flag);
    - ``similarity_fn_name`` defaults to ``"dot"`` (the sum of per-token cosines);
    - ``truncate_dim`` (the attribute and ``encode``'s argument) must keep whole tokens (a multiple of d);
    - ``encode([])`` returns an empty ``(0, K*d)`` array;
    - ``save``/``push_to_hub`` record ``st-oblique`` as a requirement of the model, so that loading it where the
      plugin is missing fails with ``pip install -U "st-oblique>=..."`` instead of a traceback.

    Models it saves load with plain ST as well: ``SentenceTransformer(path, trust_remote_code=True)``.

    Its model card (``README.md``, written by ``save`` and ``push_to_hub``) is ST's card plus an "Oblique
    Embedding" section and a usage snippet that runs (:class:`~st_oblique.model.card.ObliqueModelCardData`).
    A README loaded with the model is reused when saving again, as in ST, unless it was generated by plain ST
    (its usage line cannot load an oblique model); :func:`st_oblique.model.card.regenerate_model_card` forces
    a new one. Failures of ``push_to_hub`` explain what to fix (see :func:`st_oblique.model.hub_errors.explain_push_errors`).

    Example::

        from st_oblique import ObliqueSentenceTransformer

        model = ObliqueSentenceTransformer("user/oblique-minilm")   # a Hub id or a local folder
        embeddings = model.encode(["A cat sits.", "A dog runs."])    # (2, K*d)
        print(model.similarity(embeddings, embeddings))              # sums of K cosines, in [-K, K]
    """

    trusted_module_classes = StObliqueModuleClasses()
    model_requirements = {
        PACKAGE: {
            "specifier": f">={MIN_READER_VERSION}",
            "reason": "The model uses st-oblique's modules (oblique manifold embeddings).",
        }
    }
    model_card_data_class = ObliqueModelCardData

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        modules: list[nn.Module] | None = None,
        device: str | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        cache_folder: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        local_files_only: bool = False,
        token: bool | str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        model_card_data: SentenceTransformerModelCardData | None = None,
        backend: Literal["torch", "onnx", "openvino"] = "torch",
        similarity_fn_name: str | None = None,
        truncate_dim: int | None = None,
    ) -> None:
        """Sentence Transformers' constructor, with the same arguments (see
        :class:`~sentence_transformers.SentenceTransformer`); ``similarity_fn_name`` defaults to ``"dot"``."""
        if isinstance(model_card_data, SentenceTransformerModelCardData):
            model_card_data = ObliqueModelCardData.from_card_data(model_card_data)
        loading = model_name_or_path is not None and modules is None
        if loading:
            check_model_folder(model_name_or_path)
            name = str(model_name_or_path)
            if not is_hub_model_id(name) and not os.path.exists(os.path.expanduser(name)):
                raise ObliqueLoadError(missing_model_message(name, offline=True, hub_id=False))
            local_files_only = check_hub_access(
                [name], cache_folder=cache_folder, revision=revision, local_files_only=local_files_only
            )
        with explain_load_failure(model_name_or_path if loading else None, cache_folder, revision, local_files_only):
            super().__init__(
                model_name_or_path,
                modules=modules,
                device=device,
                prompts=prompts,
                default_prompt_name=default_prompt_name,
                cache_folder=cache_folder,
                trust_remote_code=trust_remote_code,
                revision=revision,
                local_files_only=local_files_only,
                token=token,
                model_kwargs=model_kwargs,
                processor_kwargs=processor_kwargs,
                config_kwargs=config_kwargs,
                model_card_data=model_card_data,
                backend=backend,
                similarity_fn_name=similarity_fn_name,
                truncate_dim=truncate_dim,
            )
        if loading:
            problem = find_nonfinite_tensor(self, local_model_folder(model_name_or_path, cache_folder, revision))
            if problem:
                raise ObliqueLoadError(f"Cannot load the model {model_name_or_path}: {problem}")
        if similarity_fn_name_if_set(self) is None:
            self.similarity_fn_name = "dot"
        self.__dict__["_modules_ready"] = True
        self.truncate_dim = self.truncate_dim  # the modules exist only now: check a truncate_dim given or saved
        if has_unloadable_usage(loaded_model_card(self)):
            # A README generated by plain ST tells users `SentenceTransformer("id")`, which cannot load this model.
            set_loaded_model_card(self, None)

    @property
    def truncate_dim(self) -> int | None:
        """Sentence Transformers' ``truncate_dim``, restricted to whole tokens.

        Keeping the first ``k * d`` dimensions keeps the first k unit tokens, a point of OB(d, k) whose dot product
        is still a sum of cosines; a cut inside a token would leave a token that is not unit-norm.
        """
        return self.__dict__.get("_truncate_dim")

    @truncate_dim.setter
    def truncate_dim(self, truncate_dim: int | None) -> None:
        if self.__dict__.get("_modules_ready"):  # ST sets it once before the modules are loaded
            check_truncate_dim(self, truncate_dim)
        self.__dict__["_truncate_dim"] = truncate_dim

    def encode(
        self,
        inputs: Sequence[Any] | Any,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: Literal["sentence_embedding", "token_embeddings"] | None = "sentence_embedding",
        precision: Literal["float32", "int8", "uint8", "binary", "ubinary"] = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | list[str | torch.device] | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        pool: dict[str, Any] | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> list[torch.Tensor] | np.ndarray | torch.Tensor | dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Sentence Transformers' :meth:`~sentence_transformers.SentenceTransformer.encode`, same arguments.

        ``truncate_dim`` must keep whole tokens (a multiple of d); an empty list of inputs gives an empty
        ``(0, K*d)`` array (or tensor) instead of ST's ``(0,)``. Inputs are checked first
        (:func:`st_oblique.data.images.check_encode_inputs`): ``None``, images without pixels and image arrays holding
        NaN are refused naming the input's index; grey ``(H, W)`` and 4-channel image arrays are converted to RGB.
        """
        kept = check_truncate_dim(self, truncate_dim if truncate_dim is not None else self.truncate_dim)
        if isinstance(inputs, (list, tuple)):
            inputs = check_encode_inputs(inputs, self.modalities)
        elif inputs is None or isinstance(inputs, (Image.Image, np.ndarray, torch.Tensor)):
            inputs = check_encode_inputs([inputs], self.modalities)[0]
        if isinstance(inputs, (list, tuple)) and not inputs and output_value == "sentence_embedding":
            shape = oblique_shape(self)
            if shape is not None:
                empty = torch.zeros(0, kept * shape.token_dim)
                return empty if convert_to_tensor else empty.numpy() if convert_to_numpy else []
        return super().encode(
            inputs,
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            output_value=output_value,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
            normalize_embeddings=normalize_embeddings,
            truncate_dim=truncate_dim,
            pool=pool,
            chunk_size=chunk_size,
            **kwargs,
        )

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``, with the weights of another model refused in one sentence that names a
        differing tensor and the fix (torch's own message lists every tensor's size).

        This is where a trainer resuming from the checkpoint of another model (``resume_from_checkpoint`` of a plain
        ``SentenceTransformerTrainer``) fails: Sentence Transformers loads the checkpoint as a model and copies its
        state here.

        Raises:
            CheckpointError: a tensor has another shape here (another num_tokens, token_dim or backbone), or, with
                ``strict``, the two models have different tensors.
        """
        own = {name: tuple(tensor.shape) for name, tensor in self.state_dict().items()}
        given = {name: tuple(tensor.shape) for name, tensor in state_dict.items()}
        differing = sorted(name for name in own.keys() & given.keys() if own[name] != given[name])
        unmatched = sorted(own.keys() ^ given.keys()) if strict else []
        if differing or unmatched:
            name = (differing or unmatched)[0]
            found = f"has shape {given[name]} there and {own[name]} here" if differing else (
                "exists only " + ("here" if name in own else "there")
            )
            raise CheckpointError(
                f"These weights come from another model: {len(differing) + len(unmatched)} tensor(s) differ, e.g. "
                f"{name!r} {found} (another num_tokens, token_dim, token source or backbone?). When resuming training "
                "(resume_from_checkpoint), pass a checkpoint written by this model's run, or train without it."
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def fit(self, train_objectives: Iterable[tuple[Any, nn.Module]], *args: Any, **kwargs: Any) -> None:
        """Sentence Transformers' deprecated ``fit`` (same arguments), refusing an empty data loader with
        st-oblique's message instead of torch's sampler error.

        Raises:
            TrainingDataError: a training objective's data loader holds no examples.
        """
        objectives = list(train_objectives)
        for index, (loader, _) in enumerate(objectives):
            dataset = getattr(loader, "dataset", None)
            if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
                raise TrainingDataError(
                    f"Training objective {index} of fit() has an empty data loader (its dataset holds no examples); "
                    "give it at least one batch of examples, or leave that objective out."
                )
        return super().fit(objectives, *args, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool | None = None,
        safe_serialization: bool = True,
        commit_message: str | None = None,
        local_model_path: str | None = None,
        exist_ok: bool = False,
        replace_model_card: bool = False,
        train_datasets: list[str] | None = None,
        revision: str | None = None,
        create_pr: bool = False,
    ) -> str:
        """Sentence Transformers' :meth:`~sentence_transformers.SentenceTransformer.push_to_hub` (same arguments).

        The model is saved to a temporary folder and uploaded in one commit. When the push fails, the error
        says why and how to fix it (a rejected token, a server error, an unreachable Hub), and the model is left
        as it was. :func:`st_oblique.model.push.push_to_hub` also pushes saved folders with evaluation results.
        """
        model_id, card = self.model_card_data.model_id, loaded_model_card(self)
        if card:
            # Example images of a card saved before the repository existed: make them download from it.
            set_loaded_model_card(self, self.model_card_data.asset_urls_for(card, repo_id))
        try:
            with explain_push_errors(repo_id):
                return super().push_to_hub(
                    repo_id,
                    token=token,
                    private=private,
                    safe_serialization=safe_serialization,
                    commit_message=commit_message,
                    local_model_path=local_model_path,
                    exist_ok=exist_ok,
                    replace_model_card=replace_model_card,
                    train_datasets=train_datasets,
                    revision=revision,
                    create_pr=create_pr,
                )
        finally:
            self.model_card_data.model_id = model_id
            set_loaded_model_card(self, card)


def load(model_name_or_path: str, **kwargs: Any) -> ObliqueSentenceTransformer:
    """Load an oblique model from a Hub id or a local folder: ``ObliqueSentenceTransformer(model_name_or_path, **kwargs)``.

    Keyword arguments are :class:`ObliqueSentenceTransformer`'s (``device``, ``revision``, ``token``,
    ``cache_folder``, ``local_files_only``, ``truncate_dim``, ...).
    """
    return ObliqueSentenceTransformer(model_name_or_path, **kwargs)
