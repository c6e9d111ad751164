"""Whether a model name is a Hugging Face Hub repository id or a local path."""

from __future__ import annotations

import os
import re

__all__ = ["is_hub_model_id"]

_HUB_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_model_id(name: str) -> bool:
    """Whether ``name`` looks like a Hub model id (``"user/name"`` or ``"name"``) rather than a local path."""
    return bool(_HUB_MODEL_ID.match(name)) and not os.path.exists(name)
