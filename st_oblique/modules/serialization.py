"""Loading st-oblique module files with errors that name the file and the problem.

ST's own helpers raise bare ``RuntimeError``/``JSONDecodeError`` on a damaged save. Every st-oblique
module loads its config and weights through these two functions instead, so a truncated download,
a hand-edited config or a file from a newer st-oblique release is reported in one clear sentence.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import torch
from packaging.version import InvalidVersion, Version
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors_file
from sentence_transformers.util import load_file_path
from torch import nn

from st_oblique._version import __version__
from st_oblique.errors import ObliqueLoadError

VERSION_KEY = "st_oblique_version"
"""Key written into every st-oblique module config: the release that saved it."""

HUB_KWARGS = ("subfolder", "token", "cache_folder", "revision", "local_files_only")


def hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``Module.load`` keyword arguments that locate files (local folder or Hub repo)."""
    return {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}


def describe_location(model_name_or_path: str, subfolder: str, filename: str) -> str:
    """Human-readable location of a module file, e.g. ``/models/x/1_ObliquePooling/config.json``.

    The model's own path is kept as given (an absolute path keeps its leading ``/``); only the separators between
    the parts are normalised.
    """
    head = str(model_name_or_path).rstrip("/") or str(model_name_or_path)
    tail = [part.strip("/") for part in (subfolder, filename) if part and part.strip("/")]
    if not head:
        return "/".join(tail)
    return head + "".join("/" + part for part in tail) if head != "/" else "/" + "/".join(tail)


def with_version(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` plus the st-oblique release writing it (read back by :func:`load_module_config`)."""
    return {**config, VERSION_KEY: __version__}


def load_module_config(
    module_class: type,
    model_name_or_path: str,
    *,
    config_keys: Iterable[str],
    required_keys: Iterable[str] = (),
    filename: str = "config.json",
    **kwargs: Any,
) -> dict[str, Any]:
    """Read and check a module's JSON config.

    Args:
        module_class: the class being loaded (named in messages).
        model_name_or_path: local folder or Hub repo id of the whole model.
        config_keys: the keys the class accepts.
        required_keys: keys that must be present.
        filename: the config file name inside the module folder.
        **kwargs: hub arguments (``subfolder``, ``token``, ``cache_folder``, ``revision``, ``local_files_only``).

    Returns:
        The config without the version key.

    Raises:
        ObliqueLoadError: the file is missing, is not valid JSON, lacks required keys, or has keys this
            release does not know (with an upgrade hint when a newer release wrote it).
    """
    location = describe_location(model_name_or_path, kwargs.get("subfolder", ""), filename)
    name = module_class.__name__
    path = load_file_path(model_name_or_path, filename, **hub_kwargs(kwargs))
    if path is None:
        raise ObliqueLoadError(
            f"Cannot load {name}: {location} is missing. The saved model is incomplete; save it again "
            "or download it again."
        )
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ObliqueLoadError(f"Cannot load {name}: {location} is not valid JSON ({error}).") from error
    if not isinstance(config, dict):
        raise ObliqueLoadError(
            f"Cannot load {name}: {location} must hold a JSON object, found {type(config).__name__}."
        )

    config = check_config_keys(name, location, config, config_keys)
    missing = sorted(set(required_keys) - set(config))
    if missing:
        raise ObliqueLoadError(
            f"Cannot load {name}: {location} lacks the required key(s) {missing}. The file is damaged or was "
            "edited by hand; save the model again."
        )
    return config


def check_config_keys(name: str, location: str, config: dict[str, Any], known_keys: Iterable[str]) -> dict[str, Any]:
    """Strip the version key from a loaded config and reject keys this release does not know.

    A key this release does not know means a newer st-oblique wrote the file (the message says which release
    to install) or the file was edited.
    """
    config = dict(config)
    saved_version = config.pop(VERSION_KEY, None)
    unknown = sorted(set(config) - set(known_keys))
    if unknown:
        raise ObliqueLoadError(
            f"Cannot load {name}: {location} has unknown key(s) {unknown}. " + _version_hint(saved_version)
        )
    return config


def load_module_weights(
    module: nn.Module, model_name_or_path: str, *, optional_tensor_prefix: str | None = None, **kwargs: Any
) -> nn.Module:
    """Load ``model.safetensors`` of a module folder into ``module``, strictly.

    Tensors whose names start with ``optional_tensor_prefix`` may be missing from the file (older releases did not
    save them); they keep the values the module was built with from its config.

    Raises:
        ObliqueLoadError: the file is missing or unreadable (e.g. truncated), or its tensors do not match the
            module built from the config (missing, unexpected or differently shaped tensors).
    """
    name = type(module).__name__
    location = describe_location(model_name_or_path, kwargs.get("subfolder", ""), "model.safetensors")
    path = load_file_path(model_name_or_path, "model.safetensors", **hub_kwargs(kwargs))
    if path is None:
        raise ObliqueLoadError(f"Cannot load {name}: {location} is missing. Save the model again or download it again.")
    try:
        state = load_safetensors_file(path)
    except (SafetensorError, OSError, RuntimeError) as error:
        raise ObliqueLoadError(
            f"Cannot load {name}: {location} is not a readable safetensors file ({error}). It is probably "
            "truncated or corrupted; download or save it again."
        ) from error

    expected = module.state_dict()
    if optional_tensor_prefix:
        state = {**{k: v for k, v in expected.items() if k.startswith(optional_tensor_prefix)}, **state}
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    for key in sorted(set(expected) & set(state)):
        if tuple(expected[key].shape) != tuple(state[key].shape):
            problems.append(
                f"{key!r} has shape {tuple(state[key].shape)} in the file but {tuple(expected[key].shape)} "
                "according to the config"
            )
    if problems:
        defaulted = _defaulted_keys(module, model_name_or_path, kwargs)
        if defaulted:
            raise ObliqueLoadError(
                f"Cannot load {name}: {defaulted}, so the weights in {location} do not fit ({'; '.join(problems)}). "
                "Add the key(s) with the values the model was trained with, or save the model again."
            )
        raise ObliqueLoadError(
            f"Cannot load {name}: {location} does not match its config ({'; '.join(problems)}). The config and "
            "the weights come from different models, or one of them was edited; save the model again."
        )
    check_finite_tensors(state, location)
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
    return module


def save_safetensors_module(module: nn.Module, output_path: str, *, safe_serialization: bool = True) -> None:
    """Save an st-oblique module's ``config.json`` and its weights, always as ``model.safetensors``.

    Raises:
        ValueError: ``safe_serialization=False`` (pickled weights are never written).
    """
    if not safe_serialization:
        raise ValueError(f"{type(module).__name__} saves its weights as safetensors only; use safe_serialization=True.")
    module.save_config(output_path)
    module.save_torch_weights(output_path, safe_serialization=True)


def load_safetensors_module(
    cls: type,
    model_name_or_path: str,
    *,
    required_keys: list[str],
    optional_tensor_prefix: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``cls`` from its saved ``config.json`` and load its ``model.safetensors`` (what ``save_safetensors_module``
    wrote), ``subfolder`` and hub arguments as for any ST module.

    Raises:
        ObliqueLoadError: a missing, unreadable or inconsistent ``config.json`` / ``model.safetensors``.
    """
    config = load_module_config(
        cls, model_name_or_path, config_keys=cls.config_keys, required_keys=required_keys, **kwargs
    )
    try:
        module = cls(**config)
    except (TypeError, ValueError) as error:
        location = describe_location(model_name_or_path, kwargs.get("subfolder", ""), cls.config_file_name)
        raise ObliqueLoadError(f"Cannot load {cls.__name__}: {location} holds an invalid config: {error}") from error
    return load_module_weights(module, model_name_or_path, optional_tensor_prefix=optional_tensor_prefix, **kwargs)


def check_finite_tensors(state: dict[str, torch.Tensor], location: str) -> None:
    """Raise :class:`ObliqueLoadError` naming ``location`` and the first tensor of ``state`` holding NaN or inf.

    A model with such weights loads and then embeds every input as NaN; refusing it at load time names the file.
    """
    for key in sorted(state):
        tensor = state[key]
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
            continue
        nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
        raise ObliqueLoadError(
            f"Cannot load {location}: its tensor {key!r} {tuple(tensor.shape)} holds {nan} NaN and {inf} infinite "
            "value(s), so every embedding would be NaN. The file is damaged or comes from a diverged training run; "
            "download it again or use an earlier checkpoint."
        )


def _defaulted_keys(module: nn.Module, model_name_or_path: str, kwargs: dict[str, Any]) -> str:
    """The phrase "<config file> lacks 'num_tokens' (the default 16 was used)" when the module's config file omits keys of its
    class (the usual cause of weights that do not fit their config); empty otherwise."""
    filename = getattr(module, "config_file_name", "config.json")
    try:
        path = load_file_path(model_name_or_path, filename, **hub_kwargs(kwargs))
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
    except (OSError, TypeError, ValueError):
        return ""
    config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
    keys = [key for key in getattr(module, "config_keys", []) if key not in saved and key in config]
    if not keys:
        return ""
    location = describe_location(model_name_or_path, kwargs.get("subfolder", ""), filename)
    return f"{location} lacks " + ", ".join(f"{key!r} (the default {config[key]!r} was used)" for key in keys)


def _version_hint(saved_version: str | None) -> str:
    if saved_version is not None:
        try:
            newer = Version(saved_version) > Version(__version__)
        except InvalidVersion:
            newer = False
        if newer:
            return (
                f"It was saved by st-oblique {saved_version}, newer than the installed {__version__}: "
                'upgrade with `pip install -U "st-oblique>=' + saved_version + '"`.'
            )
    return (
        f"It was saved by st-oblique {saved_version or 'of an unknown release'} and the installed release is "
        f"{__version__}; the file may have been edited by hand."
    )


class SafetensorsModule:
    """Saving and loading of st-oblique's Sentence Transformers modules: ``config.json`` stamped with the release
    (:func:`with_version`) and ``model.safetensors``, loaded back with errors that name the file
    (:func:`load_safetensors_module`). Mix in before ``sentence_transformers.base.modules.Module``.

    Subclasses set ``required_config_keys`` (keys a config must hold) and, for tensors that older releases did not
    save, ``optional_tensor_prefix`` (they keep the values built from the config).
    """

    required_config_keys: tuple[str, ...] = ()
    optional_tensor_prefix: str | None = None

    def get_config_dict(self) -> dict[str, Any]:
        return with_version(super().get_config_dict())

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        save_safetensors_module(self, output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, **kwargs: Any) -> nn.Module:
        """Load from a model folder or Hub repo (``subfolder`` and hub arguments as for any ST module).

        Raises:
            ObliqueLoadError: a missing, unreadable or inconsistent ``config.json`` / ``model.safetensors``.
        """
        return load_safetensors_module(
            cls,
            model_name_or_path,
            required_keys=list(cls.required_config_keys),
            optional_tensor_prefix=cls.optional_tensor_prefix,
            **kwargs,
        )
