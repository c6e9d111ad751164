"""Helpers of the reliability suite: folder digests (inputs and outputs must not change), damaged copies of a saved
model, and running the ``st-oblique`` command in this process."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from cli.cli_helpers import CliResult
from safetensors.torch import load_file, save_file

from st_oblique.app.cli import main

K, D = 4, 8
TINY = ["--num-tokens", str(K), "--token-dim", str(D), "--batch-size", "4", "--no-progress"]




def digest(path: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``path`` (or of ``path`` itself), plus the folder names."""
    path = Path(path)
    if not path.exists():
        return {}
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(item.relative_to(path)): hashlib.sha256(item.read_bytes()).hexdigest() if item.is_file() else "dir"
        for item in sorted(path.rglob("*"))
    }


def leftovers(parent: Path) -> list[str]:
    """Staging folders and lock files left next to output folders (there must be none)."""
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".previous-" in p.name or p.name.endswith(".lock"))


def damaged_copy(source: Path, target: Path, damage: Callable[[Path], None]) -> Path:
    """A copy of the saved model ``source`` at ``target`` with ``damage`` applied to it."""
    shutil.copytree(source, target)
    damage(target)
    return target


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def edit_json(path: Path, edit: Callable[[dict], object]) -> None:
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


def poison_tensor(path: Path, value: float, index: int = 0) -> str:
    """Put ``value`` (NaN or inf) into the ``index``-th tensor (sorted by name) of a safetensors file; returns its name."""
    state = load_file(path)
    key = sorted(state)[index]
    state[key].view(-1)[0] = value
    save_file(state, path, metadata={"format": "pt"})
    return key


def run_cli(capsys, *args) -> CliResult:
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)
