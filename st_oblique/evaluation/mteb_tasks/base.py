"""What every offline MTEB task of st-oblique shares: where its data is, and metadata that names that data.

A local task is an ordinary mteb task class whose ``load_data`` reads local files instead of the Hub. Its
``TaskMetadata`` is the official task's (same type, main score, languages, citation) under a ``Local`` name,
with ``dataset.path`` set to the local files and ``dataset.revision`` to a fingerprint of their content and of
the subset taken, so results of different data never share a cache entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mteb import TaskMetadata

from st_oblique.data.datasets.registry import default_data_root

__all__ = ["LocalTaskMixin", "local_metadata"]


def local_metadata(base: TaskMetadata, name: str, description: str | None = None, **updates: Any) -> TaskMetadata:
    """``base`` (an official task's metadata) renamed, for a task whose data is read from local files."""
    return base.model_copy(
        update={
            "name": name,
            "description": description or f"{base.description} Read from local files (st-oblique).",
            "dataset": {"path": f"local/{name}", "revision": "local"},
            "superseded_by": None,
            "adapted_from": [base.name] if base.name != name else None,
            **updates,
        }
    )


class LocalTaskMixin:
    """Locates a local task's files and records them (and the subset taken) in the task's metadata.

    Subclasses set ``default_path`` (relative to the data root) and implement ``_read_files(path)``.

    Args:
        path: the data's location (default: ``default_path`` under ``data_root``).
        data_root: the folder holding the datasets (default: ``$ST_OBLIQUE_DATA`` or ``$ST_OBLIQUE_SHARED/data``).
        max_samples: evaluate a random subset of this size (fixed seed), e.g. in CI. Its meaning is the task's:
            sentence pairs, queries, or images.
        seed: the subset's seed (also mteb's task seed).
    """

    default_path: str
    metadata: TaskMetadata

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        data_root: str | Path | None = None,
        max_samples: int | None = None,
        seed: int = 42,
        **kwargs: Any,
    ) -> None:
        self.path = self._locate(path, data_root)
        self.max_samples = max_samples
        revision = _fingerprint(self._files(self.path), self._subset_description(seed))
        self.metadata = self.metadata.model_copy(update={"dataset": {"path": str(self.path), "revision": revision}})
        super().__init__(seed=seed, **kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read the local files (once) into ``self.dataset``."""
        if self.data_loaded:
            return
        self.dataset = self._read_files(self.path)
        self.data_loaded = True

    def _read_files(self, path: Path) -> Any:
        raise NotImplementedError

    def _subset_description(self, seed: int) -> str:
        """Everything besides the files that decides which data is evaluated (part of the revision)."""
        return f"max_samples={self.max_samples};seed={seed}"

    def _files(self, path: Path) -> Sequence[Path]:
        """The files whose content the results depend on (for the revision fingerprint)."""
        return sorted(file for file in path.rglob("*") if file.is_file()) if path.is_dir() else [path]

    def _locate(self, path: str | Path | None, data_root: str | Path | None) -> Path:
        if path is None:
            root = Path(data_root) if data_root else default_data_root()
            if root is None:
                raise FileNotFoundError(
                    f"Where is the data of {self.metadata.name}? Give a data root holding {self.default_path} "
                    "(--data-root, data_root= in Python, or $ST_OBLIQUE_DATA), or path= (the folder itself) in Python."
                )
            path = root / self.default_path
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{self.metadata.name}: data not found at {path} (expected {self.default_path}).")
        return path


def _fingerprint(files: Sequence[Path], extra: str) -> str:
    digest = hashlib.blake2b(extra.encode(), digest_size=8)
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "local-" + digest.hexdigest()
