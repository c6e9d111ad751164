"""Where a model given on the command line is: fail before any work on one that is neither a saved folder nor a
Hub id."""

from __future__ import annotations

from pathlib import Path

from st_oblique.errors import ObliqueConfigError
from st_oblique.model.hub_ids import is_hub_model_id

__all__ = ["check_model_location"]


def check_model_location(model: str) -> None:
    """Raise unless ``model`` is a saved Sentence Transformers folder or looks like a Hub id.

    Raises:
        FileNotFoundError: no such folder, and not a Hub id.
        ObliqueConfigError: a folder without ``modules.json``.
    """
    path = Path(model)
    if not path.exists() and not is_hub_model_id(model):
        raise FileNotFoundError(f"Model not found: {model} (a saved model folder or a Hub id).")
    if path.is_dir() and not (path / "modules.json").is_file():
        raise ObliqueConfigError(f"{model} is not a saved Sentence Transformers model (no modules.json).")
