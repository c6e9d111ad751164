"""Write a run's output folder completely or not at all: everything goes into a hidden staging folder next to
it, which is renamed into place at the end (a rename within one file system is atomic) and removed on failure.

Example::

    from st_oblique.app.output_dir import staged_output_dir

    with staged_output_dir("runs/oblique-lit") as staging:   # fails at once if runs/ is not writable
        model.save(str(staging))
        (staging / "training_report.json").write_text("{}")
    # runs/oblique-lit now holds both files; after an exception it does not exist (and no staging folder is left)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from st_oblique.errors import OutputDirError

__all__ = ["check_writable", "staged_output_dir"]


@contextlib.contextmanager
def staged_output_dir(
    target: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Iterator[Path]:
    """A staging folder that becomes ``target`` when the ``with`` block ends without an exception.

    Args:
        target: the output folder. It must not exist or be empty, unless ``overwrite``.
        overwrite: replace an existing non-empty ``target`` (it is only removed once the new one is complete).

    Yields:
        The staging folder (``<parent>/.<name>.partial-XXXX``), on the same file system as ``target``.

    Raises:
        OutputDirError: ``target`` exists and is not empty (without ``overwrite``), is a file, or its parent cannot
            be created or written. Raised before anything is written.
    """
    target = Path(target).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise OutputDirError(f"The output folder {target} is a file; choose another output folder.")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputDirError(
            f"The output folder {target} exists and is not empty; choose another one or pass --overwrite to replace it."
        )
    created = _make_parents(target.parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    except OSError as error:
        _remove_empty(created)
        raise OutputDirError(
            f"Cannot write into {target.parent} ({error.strerror or error}); choose another output folder."
        ) from error
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the final folder private
        yield staging
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise


def check_writable(target: str | os.PathLike) -> None:
    """Raise :class:`OutputDirError` unless files can be created in the folder ``target`` (created if missing).

    It tries: creates the missing folders and a temporary folder inside, then removes what it created.
    """
    target = Path(target).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise OutputDirError(f"The output folder {target} is a file; choose another output folder.")
    created = _make_parents(target)
    try:
        Path(tempfile.mkdtemp(prefix=".st-oblique-write-check-", dir=target)).rmdir()
    except OSError as error:
        raise OutputDirError(
            f"Cannot write into {target} ({error.strerror or error}); choose another output folder."
        ) from error
    finally:
        _remove_empty(created)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_parents(parent: Path) -> list[Path]:
    """Create ``parent`` and its missing ancestors; return the created folders, deepest first."""
    missing = [folder for folder in (parent, *parent.parents) if not folder.exists()]
    blocking = next((folder for folder in (parent, *parent.parents) if folder.exists() and not folder.is_dir()), None)
    if blocking is not None:
        raise OutputDirError(f"{blocking} is a file, not a folder; choose another output folder.")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _remove_empty(missing)
        raise OutputDirError(
            f"Cannot create {parent} ({error.strerror or error}); choose another output folder."
        ) from error
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    if not any(target.iterdir()):
        target.rmdir()
        os.replace(staging, target)
        return
    previous = Path(tempfile.mkdtemp(prefix=f".{target.name}.previous-", dir=target.parent))
    os.replace(target, previous / target.name)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(previous / target.name, target)  # put the old folder back
        raise
    finally:
        shutil.rmtree(previous, ignore_errors=True)
