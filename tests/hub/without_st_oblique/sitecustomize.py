"""Put this folder on PYTHONPATH to start Python as if st-oblique were not installed.

``import st_oblique`` fails and the distribution metadata is hidden (``importlib.metadata.version("st-oblique")``
raises ``PackageNotFoundError``), which is what Sentence Transformers' requirement check sees in an environment
where ``pip install st-oblique`` never ran. ``unblock()`` restores the normal state, so the same process can go
on with st-oblique afterwards.
"""

import importlib.abc
import importlib.metadata
import sys

_real_version = importlib.metadata.version


class BlockStOblique(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "st_oblique" or name.startswith("st_oblique."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def _version(name):
    if name.replace("_", "-").lower() == "st-oblique":
        raise importlib.metadata.PackageNotFoundError(name)
    return _real_version(name)


_blocker = BlockStOblique()
sys.meta_path.insert(0, _blocker)
importlib.metadata.version = _version


def unblock() -> None:
    """Make st-oblique importable and visible again."""
    if _blocker in sys.meta_path:
        sys.meta_path.remove(_blocker)
    importlib.metadata.version = _real_version
