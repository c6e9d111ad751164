"""The files of a saved model folder: what is missing or damaged, in one sentence that names the file.

Sentence Transformers, transformers and safetensors report a damaged save with their own errors (a bare
``JSONDecodeError``, "Unrecognized processing class", "header too large", ...), which rarely name the file.
:class:`~st_oblique.ObliqueSentenceTransformer` hands a model over to them as is; when they fail, it asks
:func:`find_damaged_file` which file of the folder is at fault and raises :class:`~st_oblique.ObliqueLoadError`
with that explanation instead. :func:`check_model_folder` refuses a folder that holds no model before anything is
loaded, :func:`missing_model_message` explains a name that is neither a local folder nor an available Hub
repository, and :func:`find_nonfinite_tensor` names a weight holding NaN or inf.

Example::

    from st_oblique.model.files import find_damaged_file

    problem = find_damaged_file("runs/my-model")   # None, or e.g. "runs/my-model/tokenizer.json is not valid JSON ..."
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from safetensors import SafetensorError, safe_open
from sentence_transformers.util import import_from_string
from torch import nn

from st_oblique.errors import ObliqueError, ObliqueLoadError

__all__ = [
    "check_model_folder",
    "explain_load_failure",
    "find_damaged_file",
    "find_nonfinite_tensor",
    "loads_without_folder",
    "local_model_folder",
    "missing_model_message",
    "module_folders",
]

ROOT_CONFIG_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "flax_model.msgpack",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)
"""File names under which a Hugging Face / open_clip backbone keeps its weights."""
LEGACY_NORM_NAMES = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
"""LayerNorm parameters under the names of old TensorFlow-born checkpoints, which transformers reads (and 5.0
writes) in place of ``weight`` and ``bias``."""
DAMAGED = "The file is damaged (a truncated download or copy, or a hand edit); download or save the model again."


@contextlib.contextmanager
def explain_load_failure(
    model_name_or_path: str | None,
    cache_folder: str | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> Iterator[None]:
    """Turn a failure of the libraries loading ``model_name_or_path`` into :class:`ObliqueLoadError` when a file
    of the model is found missing or damaged (:func:`find_damaged_file`), or the name is neither a local folder
    nor an available Hub repository. Other errors, and st-oblique's own, pass unchanged."""
    try:
        yield
    except ObliqueError:
        raise
    except Exception as error:
        if model_name_or_path is None:
            raise
        name = str(model_name_or_path)
        folder = local_model_folder(name, cache_folder, revision)
        if folder is None:
            offline = local_files_only or hub_constants.is_offline_mode()
            refused = isinstance(error, HfHubHTTPError) and not isinstance(error, RepositoryNotFoundError)
            if not isinstance(error, OSError) or (refused and not offline):
                raise  # e.g. an unmet requirement (ImportError) or a Hub refusal that explains itself
            raise ObliqueLoadError(missing_model_message(name, offline=offline)) from error
        # A Hub snapshot holds only the files downloaded so far: only the user's own folder must be complete.
        problem = find_damaged_file(folder, complete=Path(name).expanduser().is_dir())
        if problem is None:
            raise
        raise ObliqueLoadError(f"Cannot load the model {name}: {problem}") from error


def local_model_folder(
    model_name_or_path: str, cache_folder: str | None = None, revision: str | None = None
) -> Path | None:
    """The local folder of a model: the folder itself, or the cached snapshot of a Hub id (None when not cached)."""
    path = Path(str(model_name_or_path)).expanduser()
    if path.is_dir():
        return path
    try:
        return Path(
            snapshot_download(str(model_name_or_path), revision=revision, cache_dir=cache_folder, local_files_only=True)
        )
    except Exception:  # not a valid repo id, not cached, ...: there is no local copy to inspect
        return None


def check_model_folder(path: str | os.PathLike) -> None:
    """Raise :class:`ObliqueLoadError` if ``path`` exists but cannot hold a model (a file, an empty folder, a
    folder without ``modules.json`` or ``config.json``). Names that do not exist locally are left to the loader
    (they may be Hub ids)."""
    path = Path(path).expanduser()
    if not path.exists():
        return
    if not path.is_dir():
        raise ObliqueLoadError(f"Cannot load the model {path}: it is a file, not a model folder; pass the folder.")
    names = sorted(item.name for item in path.iterdir())
    if not names:
        raise ObliqueLoadError(
            f"Cannot load the model {path}: the folder is empty. Save a model there first (model.save(folder)) or "
            "pass the folder that holds modules.json."
        )
    if "modules.json" not in names and "config.json" not in names:
        inner = [name for name in names if (path / name / "modules.json").is_file()]
        hint = f" It holds a model in {path / inner[0]}: pass that folder." if inner else ""
        raise ObliqueLoadError(
            f"Cannot load the model {path}: the folder holds no model (no modules.json or config.json; found "
            f"{_listing(names)}).{hint or ' Pass the folder a model was saved to.'}"
        )


def missing_model_message(name: str, *, offline: bool, hub_id: bool = True) -> str:
    """The explanation for a model ``name`` that is not a local folder (and, if ``hub_id``, could not be read from
    the Hub either; ``offline``: the Hub was not asked)."""
    path = Path(name).expanduser()
    where = "there is no such folder" + ("" if path.is_absolute() else f" (relative to {Path.cwd()})")
    similar = _similar_folders(path)
    hint = f" Did you mean {similar[0]}?" if similar else ""
    if not hub_id:
        return f"Cannot load the model {name!r}: {where}.{hint} Check the path."
    if offline:
        return (
            f"Cannot load the model {name!r}: {where}, and as a Hub id it is not in the local cache while the Hub is "
            f"offline (HF_HUB_OFFLINE=1 or local_files_only=True).{hint} Check the folder name, or download the "
            "model once online."
        )
    return (
        f"Cannot load the model {name!r}: {where}, and no Hub repository by that name could be read (it does not "
        f"exist, or it is private or gated: log in with `hf auth login`).{hint} Check the name."
    )


def find_damaged_file(folder: str | os.PathLike, *, complete: bool = True) -> str | None:
    """The first missing or damaged file of the saved model in ``folder``, as a sentence; None if none is found.

    With ``complete=False`` (a Hub snapshot, which holds only the files downloaded so far) missing files are not
    reported, only damaged ones.

    Checked: ``modules.json`` (valid JSON, a list of modules whose folders exist), the model's own JSON configs,
    every JSON file of every module folder (backbone ``config.json``, ``tokenizer.json``, processor configs...),
    every safetensors file (header and size, without reading the tensors), the shards named by a weight index,
    and that a Hugging Face backbone folder (a ``config.json`` with ``model_type``) holds a weight file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for path in (folder / name for name in ROOT_CONFIG_FILES):
        problem = _json_problem(path)
        if problem:
            return problem
    try:
        modules = module_folders(folder, complete=complete)
    except ObliqueLoadError as error:
        return str(error)
    for module_folder in modules:
        problem = _module_folder_problem(module_folder, complete=complete)
        if problem:
            return problem
    return None


def module_folders(folder: str | os.PathLike, *, complete: bool = True) -> list[Path]:
    """The folder of every module listed in ``folder/modules.json`` (``folder`` itself without one); a module that
    loads without files may have none (:func:`loads_without_folder`): its path is listed all the same.

    Raises:
        ObliqueLoadError: ``modules.json`` does not list modules, or a listed module folder that the module needs
            is missing (``complete=True``).
    """
    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return [folder]
    with open(modules_file, encoding="utf-8") as handle:
        entries = json.load(handle)
    if not isinstance(entries, list) or not all(isinstance(entry, dict) and "type" in entry for entry in entries):
        raise ObliqueLoadError(
            f"{modules_file} must be a JSON list of modules ({{'idx', 'name', 'path', 'type'}} each). {DAMAGED}"
        )
    folders = []
    for entry in entries:
        module_folder = folder / str(entry.get("path", ""))
        if not module_folder.is_dir() and complete and not loads_without_folder(folder, entry):
            raise ObliqueLoadError(
                f"{module_folder} is missing: {modules_file} lists module {entry.get('idx', '?')} ({entry['type']}) "
                "there. The saved model is incomplete; download or save it again."
            )
        folders.append(module_folder)
    return folders


def loads_without_folder(folder: str | os.PathLike, entry: dict) -> bool:
    """Whether Sentence Transformers loads the module ``entry`` of ``folder/modules.json`` although its folder is
    missing.

    Sentence Transformers never requires a module's folder: each module's ``load`` reads the files it needs from it,
    and a module without files (``Normalize`` as saved before Sentence Transformers 5: nothing) loads with its
    defaults. Such a module has no folder on the Hub either (git keeps no empty folders), e.g.
    ``sentence-transformers/all-MiniLM-L6-v2`` lists ``2_Normalize`` and has no such folder. The rule is applied the
    way Sentence Transformers applies it: the module's class loads from the missing folder (it reads nothing, so
    this is quick) or fails. Classes outside ``sentence_transformers`` and ``st_oblique`` (a model's own code, which
    only a trusted load may import) are not imported here: only loading the model tells.
    """
    class_ref = str(entry.get("type", ""))
    if not class_ref.startswith(("sentence_transformers.", "st_oblique.")):
        return True
    try:
        module_class = import_from_string(class_ref)
        module_class.load(str(folder), subfolder=str(entry.get("path", "")), local_files_only=True)
    except Exception:  # whatever stops the module from loading without its folder: the folder is needed
        return False
    return True


def find_nonfinite_tensor(model: nn.Module, folder: str | os.PathLike | None) -> str | None:
    """Name the first floating-point weight of ``model`` holding NaN or inf (and the file it was loaded from, when
    ``folder`` is the saved model's local folder); None when every weight is finite."""
    for child_name, child in model.named_children():
        for key, tensor in child.state_dict().items():
            if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
                continue
            nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
            source = _tensor_file(folder, child_name, key) if folder is not None else None
            shape = tuple(tensor.shape)
            where = (
                f"the tensor {source[1]!r} {shape} in {source[0]}"
                if source
                else f"the weight {key!r} {shape} of module {child_name} ({type(child).__name__})"
            )
            return (
                f"{where} holds {nan} NaN and {inf} infinite value(s), so every embedding would "
                "be NaN. The file is damaged or comes from a diverged training run; download it again or use an "
                "earlier checkpoint."
            )
    return None


def _module_folder_problem(module_folder: Path, *, complete: bool) -> str | None:
    json_files = sorted(module_folder.glob("*.json"))
    for path in json_files:
        if path.name not in ROOT_CONFIG_FILES:
            problem = _json_problem(path)
            if problem:
                return problem
    for path in sorted(module_folder.glob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            return problem
    for index in module_folder.glob("*.index.json"):
        with open(index, encoding="utf-8") as handle:
            shards = sorted(set((json.load(handle).get("weight_map") or {}).values()))
        missing = [shard for shard in shards if not (module_folder / shard).is_file()]
        if missing and complete:
            return f"{module_folder / missing[0]} is missing: {index} lists it. The download or copy is incomplete."
    config = module_folder / "config.json"
    if complete and config.is_file() and "model_type" in _read_json(config) and not _has_weights(module_folder):
        return (
            f"{module_folder} holds the backbone's config.json but no weight file (model.safetensors or "
            "pytorch_model.bin): the download or copy is incomplete. Download or save the model again."
        )
    return None


def _json_problem(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        size = path.stat().st_size
        detail = "it is empty" if size == 0 else f"{error}"
        return f"{path} is not valid JSON ({detail}). {DAMAGED}"
    return None


def _safetensors_problem(path: Path) -> str | None:
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError, RuntimeError) as error:
        return (
            f"{path} is not a readable safetensors file ({error}); it is probably truncated or corrupted. Download or "
            "save the model again."
        )
    return None


def _has_weights(module_folder: Path) -> bool:
    return any((module_folder / name).is_file() for name in WEIGHT_FILES) or any(module_folder.glob("*.safetensors"))


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        content = json.load(handle)
    return content if isinstance(content, dict) else {}


def _tensor_file(folder: str | os.PathLike, child_name: str, key: str) -> tuple[Path, str] | None:
    """The safetensors file of module ``child_name`` holding ``key`` (file keys may lack the module's prefix,
    e.g. ``auto_model.``), and the key as the file names it."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    try:
        folders = module_folders(folder)
        index = int(child_name)
    except (ObliqueLoadError, ValueError, OSError):
        return None
    if index >= len(folders):
        return None
    names = {key, *(key[: -len(new)] + old for new, old in LEGACY_NORM_NAMES.items() if key.endswith(new))}
    for path in sorted(folders[index].glob("*.safetensors")):
        for file_key in _safetensors_keys(path):
            if any(name == file_key or name.endswith("." + file_key) for name in names):
                return path, file_key
    return None


def _safetensors_keys(path: Path) -> Iterator[str]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            yield from list(handle.keys())
    except (SafetensorError, OSError):
        return


def _similar_folders(path: Path) -> list[str]:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return []
    names = [item.name for item in parent.iterdir() if item.is_dir() and not item.name.startswith(".")]
    return [
        str(parent / name) if str(path.parent) != "." else name
        for name in difflib.get_close_matches(path.name, names, n=1)
    ]


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
