"""One JSON file per run, named by a hash of its specification, so an interrupted study resumes where it stopped.

Example::

    store = RunStore("evaluation/results/topology/runs")
    record = store.get_or_run({"regime": "A", "arm": "sphere_mean", "seed": 0}, lambda: {"metrics": ...})
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def spec_id(spec: dict[str, Any]) -> str:
    """A short stable hash of a run specification."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]


class RunStore:
    """Run records on disk: ``{folder}/{label}-{hash}.json`` with the spec, the result, wall and CPU time, load average.

    The CPU time of the process is the budget measure that survives a shared machine: wall time grows with the
    other jobs' load, CPU time does not.

    Args:
        folder: where the records go.
        rerun: ignore existing records (run everything again).
    """

    def __init__(self, folder: str | Path, rerun: bool = False) -> None:
        self.folder = Path(folder)
        self.rerun = rerun
        self.ran = 0
        self.reused = 0
        self.executed: set[str] = set()
        """File names of the records run (not reused) by this store."""

    def path(self, spec: dict[str, Any]) -> Path:
        label = "_".join(str(spec[key]) for key in ("regime", "phase", "arm", "condition", "seed") if key in spec)
        return self.folder / f"{label.replace('/', '-')}-{spec_id(spec)}.json"

    def get_or_run(self, spec: dict[str, Any], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored record of ``spec``, or run it now and store it (written atomically)."""
        path = self.path(spec)
        record = None if self.rerun else _read_if_same_spec(path, spec)
        if record is not None:
            self.reused += 1
            return record
        load_before = os.getloadavg()[0]
        start, cpu_start = time.monotonic(), time.process_time()
        result = run()
        record = {
            "spec": spec,
            **result,
            "wall_seconds": time.monotonic() - start,
            "cpu_seconds": time.process_time() - cpu_start,
            "load_average_1min": [load_before, os.getloadavg()[0]],
        }
        _write_json(record, path)
        self.ran += 1
        self.executed.add(path.name)
        logger.info("%s: %.1fs", path.name, record["wall_seconds"])
        return record

    def get_or_compute(self, name: str, spec: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """A value derived from the study's inputs rather than a run (e.g. the data statistics the report quotes).

        Stored as ``{folder}/derived/{name}-{hash}.json`` (outside the run records, not counted in ``ran`` /
        ``reused``) so that a report made from stored runs needs none of the expensive inputs.
        """
        path = self.folder / "derived" / f"{name}-{spec_id(spec)}.json"
        stored = None if self.rerun else _read_if_same_spec(path, spec)
        if stored is not None:
            return stored["value"]
        value = compute()
        _write_json({"spec": spec, "value": value}, path)
        return value

    def stored(self, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The stored records whose spec passes ``keep`` (e.g. the other regime of the current config)."""
        records = []
        for path in sorted(self.folder.glob("*.json")):
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
            if keep(record["spec"]):
                records.append(record)
        return records


def _read_if_same_spec(path: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON stored at ``path`` if it exists and was made from ``spec`` (compared as JSON), else None."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        stored = json.load(handle)
    return stored if stored.get("spec") == json.loads(json.dumps(spec, default=str)) else None


def _write_json(obj: dict[str, Any], path: Path) -> None:
    """Write ``obj`` to ``path`` atomically (a file written halfway is never read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=1, default=float)
    os.replace(partial, path)
