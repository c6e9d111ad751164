"""Load the models to evaluate from ``NAME=PATH`` specifications (a local folder or a Hub id).

Example::

    from st_oblique.evaluation.model_loading import load_model, parse_model_spec

    name, path = parse_model_spec("baseline=../shared/weights/all-MiniLM-L6-v2")   # ("baseline", "../shared/...")
    model = load_model(path, device="cpu")
"""

from __future__ import annotations

import json
from pathlib import Path

from sentence_transformers import SentenceTransformer
from sentence_transformers.util import load_file_path

from st_oblique.model.hub_access import check_hub_access
from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer

__all__ = ["load_model", "parse_model_spec"]


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``"name=path"`` -> ``(name, path)``; a bare path is named after its last component."""
    name, separator, path = spec.partition("=")
    if separator and name and path and not Path(spec).exists():
        return name, path
    return Path(spec.rstrip("/")).name or spec, spec


def load_model(
    path: str, *, device: str | None = None, trust_remote_code: bool = False, revision: str | None = None
) -> SentenceTransformer:
    """A SentenceTransformer from a folder or Hub id.

    Models that use st-oblique's modules load through :class:`~st_oblique.ObliqueSentenceTransformer` (no
    ``trust_remote_code`` needed); every other model through ``SentenceTransformer``, so its saved similarity
    function (e.g. cosine) is kept.
    """
    local_files_only = check_hub_access([path], revision=revision)  # seconds, not minutes of retries, offline
    modules_path = load_file_path(path, "modules.json", revision=revision, local_files_only=local_files_only)
    uses_st_oblique = False
    if modules_path is not None:
        try:
            with open(modules_path, encoding="utf-8") as handle:
                uses_st_oblique = any(str(entry.get("type", "")).startswith("st_oblique.") for entry in json.load(handle))
        except (ValueError, AttributeError, TypeError):  # a damaged modules.json: st-oblique's loader explains it
            uses_st_oblique = True
    model_class = ObliqueSentenceTransformer if uses_st_oblique else SentenceTransformer
    return model_class(
        path, device=device, trust_remote_code=trust_remote_code, revision=revision, local_files_only=local_files_only
    )
