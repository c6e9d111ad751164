"""Where the study and benchmark commands write: never over the committed results unless asked.

``evaluation/results/`` holds the results the README and the closing notes quote, committed to git. Running a study
or benchmark to reproduce or extend them writes to the command's ``--output-dir`` / ``--output``, by default under
``runs/evaluation/`` of the working folder (ignored by git); a path holding files committed to git is refused unless
``--overwrite`` is given, so a command run to look never changes the repository. Committed run records stay
reusable: :func:`reuse_records` copies them into the new output folder before the study starts.

Commands run as scripts (``python evaluation/benchmarks/x.py``) put the repository root on ``sys.path`` first.
Every command uses the same two functions::

    from evaluation.study_output import add_output_option, checked_output

    parser = argparse.ArgumentParser()
    add_output_option(parser, "topology")                        # --output-dir (default runs/evaluation/topology)
    args = parser.parse_args()                                   # and --overwrite
    output_dir = checked_output(parser, args.output_dir, args.overwrite)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "COMMITTED_RESULTS",
    "OUTPUT_ROOT",
    "REPO_ROOT",
    "add_output_option",
    "add_overwrite_option",
    "checked_output",
    "committed_files",
    "default_output",
    "reuse_records",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED_RESULTS = REPO_ROOT / "evaluation" / "results"
"""The committed results (what the README quotes)."""
OUTPUT_ROOT = Path("runs") / "evaluation"
"""Where a command writes by default, relative to the working folder (``/runs/`` is in ``.gitignore``)."""


def default_output(name: str) -> Path:
    """``runs/evaluation/<name>``: a command's default output folder (or file)."""
    return OUTPUT_ROOT / name


def add_output_option(
    parser: argparse.ArgumentParser, name: str, *, option: str = "--output-dir", what: str = "the output folder"
) -> None:
    """Add ``option`` (default :func:`default_output` of ``name``) and ``--overwrite`` to ``parser``."""
    parser.add_argument(
        option,
        type=Path,
        default=default_output(name),
        help=f"{what} (default: %(default)s; paths holding results committed to git need --overwrite)",
    )
    add_overwrite_option(parser)


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--overwrite`` (for commands whose output option has no default)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="allow writing over results committed to the repository (e.g. to regenerate evaluation/results/)",
    )


def checked_output(parser: argparse.ArgumentParser, path: str | Path, overwrite: bool) -> Path:
    """``path``, after refusing it (``parser.error``: exit status 2 and a message) when it holds files committed to
    git and ``overwrite`` is False."""
    path = Path(path)
    committed = committed_files(path)
    if committed and not overwrite:
        shown = ", ".join(committed[:3]) + (f" and {len(committed) - 3} more" if len(committed) > 3 else "")
        parser.error(
            f"{path} holds results committed to the repository ({shown}); writing there would change them. Give "
            f"another output (default: {OUTPUT_ROOT}/...), or add --overwrite to regenerate the committed results."
        )
    return path


def committed_files(path: str | Path) -> list[str]:
    """The files committed to git at or under ``path`` (relative to the repository root). Outside a git checkout
    of this repository, the existing files at or under ``path`` if it lies in ``evaluation/results/``."""
    resolved = Path(path).resolve()
    try:
        relative = resolved.relative_to(REPO_ROOT)
    except ValueError:
        return []
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--", str(relative)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        listed = None
    if listed is not None and listed.returncode == 0:
        return listed.stdout.splitlines()
    if not resolved.is_relative_to(COMMITTED_RESULTS) or not resolved.exists():
        return []
    files = [resolved] if resolved.is_file() else sorted(item for item in resolved.rglob("*") if item.is_file())
    return [str(item.relative_to(REPO_ROOT)) for item in files]


def reuse_records(source: str | Path, target: str | Path) -> int:
    """Copy the run records (``*.json``, and ``derived/*.json``) of ``source`` into ``target`` where ``target`` has
    no file of that name yet; returns how many were copied. A study reading ``target`` then reuses them (a record is
    reused only when its specification equals the run's)."""
    source, target = Path(source), Path(target)
    copied = 0
    for record in sorted(source.glob("*.json")) + sorted(source.glob("derived/*.json")):
        destination = target / record.relative_to(source)
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(record, destination)
        copied += 1
    return copied
