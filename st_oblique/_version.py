"""The installed st-oblique release (read by packaging and written into every saved model's requirements), and the
versions of the libraries that decide its results (written into training and evaluation reports)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

__version__ = "0.2.0"

_DISTRIBUTIONS = {
    "sentence_transformers": "sentence-transformers",
    "transformers": "transformers",
    "torch": "torch",
    "open_clip": "open_clip_torch",
    "mteb": "mteb",
}


def package_versions() -> dict[str, str]:
    """``{"st_oblique": ..., "python": ..., "sentence_transformers": ..., "transformers": ..., "torch": ...,
    "open_clip": ..., "mteb": ...}``: what a report records so that its numbers can be reproduced.

    An imported library gives its own ``__version__`` (with the build, e.g. torch's ``+cu130``); the others are read
    from the installed distributions, so nothing is imported; a missing one is ``"not installed"``.
    """
    versions = {"st_oblique": __version__, "python": platform.python_version()}
    for key, distribution in _DISTRIBUTIONS.items():
        version = getattr(sys.modules.get(key), "__version__", None)
        try:
            versions[key] = version or metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[key] = "not installed"
    return versions
