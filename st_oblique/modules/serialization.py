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

from st_oblique import __version__
from st_oblique.errors import ObliqueLoadError

VERSION_KEY = "st_oblique_version"
"""Key written into every st-oblique module config: the release that saved it."""

HUB_KWARGS = ("subfolder", "token", "cache_folder", "revision", "local_files_only")


def hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``Module.load`` keyword arguments that locate files (local folder or Hub repo)."""
    return {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}


def describe_location(model_name_or_path: str, subfolder: str, filename: str) -> str:
    """Human-readable location of a module file, e.g. ``/models/x/1_ObliquePooling/config.json``."""
    return "/".join(part.strip("/") for part in (model_name_or_path, subfolder, filename) if part)


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
        raise ObliqueLoadError(f"Cannot load {name}: {location} must hold a JSON object, found {type(config).__name__}.")

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
        raise ObliqueLoadError(f"Cannot load {name}: {location} has unknown key(s) {unknown}. " + _version_hint(saved_version))
    return config


def load_module_weights(module: nn.Module, model_name_or_path: str, **kwargs: Any) -> nn.Module:
    """Load ``model.safetensors`` of a module folder into ``module``, strictly.

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
        raise ObliqueLoadError(
            f"Cannot load {name}: {location} does not match its config ({'; '.join(problems)}). The config and "
            "the weights come from different models, or one of them was edited; save the model again."
        )
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
    return module


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

