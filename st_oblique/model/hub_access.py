"""Whether the models a builder or loader names can be read from the Hugging Face Hub, decided in seconds.

Without a network, transformers and huggingface_hub retry every file of a model five times with back-off: four
minutes for ``oblique_text_model("sentence-transformers/all-MiniLM-L6-v2")``, ending in a message that does not
say a local folder would do, and as long again for a model that *is* cached (they still ask the Hub for every
optional file). :func:`check_hub_access` runs before any of that, once per call of a builder
(:func:`~st_oblique.model.loading_options.with_loading_options`) or loader
(:class:`~st_oblique.ObliqueSentenceTransformer`, :func:`st_oblique.evaluation.model_loading.load_model`):

- a name that is a local folder, or that does not look like a Hub id, is not its business;
- a Hub id whose files are in the cache: loaded from the cache (``local_files_only=True``) when the Hub cannot be
  reached, with a warning; otherwise as usual;
- a Hub id that is not cached: :class:`~st_oblique.ObliqueLoadError` at once when downloads are off
  (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) or the Hub does not answer a short probe, naming the model,
  the cache folder and the fixes (a local folder, a mirror through ``HF_ENDPOINT``, downloading once online).

Everything goes through huggingface_hub's public API: its cache (``try_to_load_from_cache``), its offline switch
(``is_offline_mode``), its endpoint (``HF_ENDPOINT``) and its HTTP session (which honours proxy settings).

Example::

    from st_oblique.model.hub_access import check_hub_access

    local_files_only = check_hub_access(["sentence-transformers/all-MiniLM-L6-v2"])  # raises in seconds when offline
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from huggingface_hub import constants as hub_constants
from huggingface_hub import get_session, is_offline_mode, try_to_load_from_cache

from st_oblique.errors import ObliqueLoadError
from st_oblique.model.files import _similar_folders  # the one "Did you mean" of missing_model_message
from st_oblique.model.hub_ids import is_hub_model_id

__all__ = ["HUB_PROBE_TIMEOUT", "check_hub_access", "hub_cache_folder", "hub_unreachable_reason", "is_cached"]

logger = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT = 4.0
"""Seconds the probe of the Hub's endpoint may take before the Hub counts as unreachable."""

_PROBE_MEMORY_SECONDS = 60.0
"""A probe's answer is reused for this long (a builder loads several files and towers in a row)."""

_MARKER_FILES = (
    "modules.json",
    "config.json",
    "open_clip_config.json",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)
"""Files one of which every model repository st-oblique loads holds (Sentence Transformers, transformers, timm,
open_clip and its pretrained weights): one of them in the cache means the repository was downloaded."""

_probes: dict[str, tuple[float, str | None]] = {}


def check_hub_access(
    names: Iterable[str],
    *,
    cache_folder: str | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
) -> bool:
    """Check, in seconds, that every Hub id among ``names`` can be loaded; return the ``local_files_only`` to use.

    Args:
        names: model names as given to the loader (local folders and non-Hub names are skipped).
        cache_folder: the loader's cache folder (default: ``SENTENCE_TRANSFORMERS_HOME``, else huggingface_hub's).
        revision: the revision to load (its cached snapshot is the one that counts).
        local_files_only: the caller's own flag (downloads off).

    Returns:
        ``local_files_only``, or True when the Hub cannot be reached and every named Hub model is cached (the
        loaders then read the cache at once instead of retrying every file).

    Raises:
        ObliqueLoadError: a Hub id that is not cached while downloads are off or the Hub cannot be reached.
    """
    hub_ids = [str(name) for name in names if name is not None and is_hub_model_id(str(name))]
    if not hub_ids:
        return local_files_only
    missing = [name for name in hub_ids if not is_cached(name, cache_folder=cache_folder, revision=revision)]
    offline = local_files_only or is_offline_mode()
    if offline:
        if missing:
            raise ObliqueLoadError(_offline_message(missing[0], cache_folder, local_files_only))
        return local_files_only
    reason = hub_unreachable_reason(hub_ids[0], revision=revision)
    if reason is None:
        return local_files_only
    if missing:
        raise ObliqueLoadError(_unreachable_message(missing[0], cache_folder, reason))
    logger.warning(
        f"The Hugging Face Hub at {hub_constants.ENDPOINT} cannot be reached ({reason}): loading "
        f"{', '.join(hub_ids)} from the cache ({hub_cache_folder(cache_folder)}). Set HF_HUB_OFFLINE=1 to skip "
        "this check."
    )
    return True


def is_cached(repo_id: str, *, cache_folder: str | None = None, revision: str | None = None) -> bool:
    """Whether the cache holds files of the model repository ``repo_id`` at ``revision`` (default: main)."""
    for filename in _MARKER_FILES:
        try:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=_cache_dir(cache_folder), revision=revision)
        except ValueError:  # not a valid repository id for the cache
            return False
        if isinstance(found, str):
            return True
    return False


def hub_unreachable_reason(
    repo_id: str, *, revision: str | None = None, timeout: float = HUB_PROBE_TIMEOUT
) -> str | None:
    """None when the Hub's endpoint (``HF_ENDPOINT``) answers a request for a file of ``repo_id`` within ``timeout``
    seconds (any HTTP status: the Hub is there), else why not (the transport error). Answers are remembered for a
    minute per endpoint."""
    endpoint = hub_constants.ENDPOINT
    now = time.monotonic()
    remembered = _probes.get(endpoint)
    if remembered is not None and now - remembered[0] < _PROBE_MEMORY_SECONDS:
        return remembered[1]
    start = time.monotonic()
    try:
        # the request the loaders would send first (a mirror may serve nothing but repository files)
        url = f"{endpoint}/{repo_id}/resolve/{quote(revision or 'main', safe='')}/config.json"
        get_session().head(url, timeout=timeout)
        reason = None
    except Exception as error:  # httpx's transport errors, OSError: the endpoint does not answer
        reason = f"{type(error).__name__}: {error}".rstrip(": ") + f"; probed in {time.monotonic() - start:.1f} s"
    _probes[endpoint] = (now, reason)
    return reason


def hub_cache_folder(cache_folder: str | None = None) -> str:
    """The folder Hub downloads are cached in for a loader given ``cache_folder``."""
    return str(_cache_dir(cache_folder) or hub_constants.HF_HUB_CACHE)


def _cache_dir(cache_folder: str | None) -> str | None:
    return cache_folder or os.environ.get("SENTENCE_TRANSFORMERS_HOME") or None


def _not_a_folder(name: str) -> str:
    path = Path(name).expanduser()
    similar = _similar_folders(path)
    return (
        "there is no such folder"
        + ("" if path.is_absolute() else f" (relative to {Path.cwd()})")
        + (f"; did you mean {similar[0]}?" if similar else "")
    )


def _fixes(name: str) -> str:
    local = name.rsplit("/", 1)[-1]
    return (
        f"pass a local folder holding the model (one saved with model.save(...), or one downloaded where the Hub is "
        f"reachable with `hf download {name} --local-dir {local}`), or set HF_ENDPOINT to a reachable Hub mirror"
    )


def _offline_message(name: str, cache_folder: str | None, local_files_only: bool) -> str:
    switch = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE=1"
    online = "without local_files_only=True" if local_files_only else "with HF_HUB_OFFLINE unset"
    return (
        f"Cannot load the model {name!r}: {_not_a_folder(name)}, and as a Hugging Face Hub id it is not in the cache "
        f"({hub_cache_folder(cache_folder)}) while downloads are off ({switch}). To fix: {_fixes(name)}, or load it "
        f"once {online} where the Hub is reachable."
    )


def _unreachable_message(name: str, cache_folder: str | None, reason: str) -> str:
    return (
        f"Cannot load the model {name!r}: {_not_a_folder(name)}, it is not in the Hugging Face cache "
        f"({hub_cache_folder(cache_folder)}), and the Hub at {hub_constants.ENDPOINT} cannot be reached ({reason}). "
        f"To fix: {_fixes(name)}. (HF_HUB_OFFLINE=1 skips this check and uses only the cache.)"
    )
