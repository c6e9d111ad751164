"""Write an output folder completely or not at all: everything goes into a hidden staging folder next to it, which
is renamed into place at the end (a rename within one file system is atomic) and removed on failure.

One run at a time writes a given folder: a second run into the same folder (another ``st-oblique train`` started
meanwhile) is refused at once, before anything is loaded, naming the process that holds it. A full disk is
reported as such, with nothing written.

Example::

    from st_oblique.output_folder import staged_output_dir

    with staged_output_dir("runs/oblique-lit") as staging:   # fails at once if runs/ is not writable
        model.save(str(staging))
        (staging / "training_report.json").write_text("{}")
    # runs/oblique-lit now holds both files; after an exception it does not exist (and no staging folder is left)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from st_oblique.errors import OutputDirError

__all__ = ["check_writable", "lock_output_dir", "staged_output_dir"]

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def staged_output_dir(
    target: str | os.PathLike,
    *,
    overwrite: bool = False,
    merge: bool = False,
) -> Iterator[Path]:
    """A staging folder that becomes ``target`` when the ``with`` block ends without an exception.

    Args:
        target: the output folder. It must not exist or be empty, unless ``overwrite`` or ``merge``.
        overwrite: replace an existing non-empty ``target`` (it is only removed once the new one is complete).
        merge: move the staged files into ``target`` (kept, created if missing), replacing files of the same name;
            each file is replaced atomically, and nothing is moved unless the block succeeded.

    Yields:
        The staging folder (``<parent>/.<name>.partial-XXXX``), on the same file system as ``target``.

    Raises:
        OutputDirError: ``target`` exists and is not empty (without ``overwrite``/``merge``), is a file, its parent
            cannot be created or written, or another run is writing it: raised before anything is written. Also
            when the disk fills up while writing (nothing is left behind).
    """
    target = Path(target).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise OutputDirError(f"The output folder {target} is a file; choose another output folder.")
    created = _make_parents(target.parent)
    try:
        with lock_output_dir(target):
            if target.is_dir() and any(target.iterdir()) and not (overwrite or merge):
                raise OutputDirError(
                    f"The output folder {target} exists and is not empty; choose another one or pass --overwrite to "
                    "replace it."
                )
            try:
                staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
            except OSError as error:
                raise OutputDirError(
                    f"Cannot write into {target.parent} ({error.strerror or error}); choose another output folder."
                ) from error
            try:
                staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the final folder private
                yield staging
                if merge:
                    _merge_into(staging, target)
                else:
                    _move_into_place(staging, target)
            except Exception as error:
                if _is_disk_full(error):
                    raise OutputDirError(
                        f"The disk is full (No space left on device) while writing {target}: nothing was written there "
                        "and the partial files were removed. Free some space or choose an output folder on another "
                        "disk."
                    ) from error
                raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        _remove_empty(created)
        raise


@contextlib.contextmanager
def lock_output_dir(target: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of the output folder ``target`` (``<parent>/.<name>.lock``, removed at the end).

    The lock is an advisory ``flock``: the operating system releases it when its process ends, however it ends,
    so a crashed run never blocks the next one.

    Raises:
        OutputDirError: another process holds it.
    """
    target = Path(target).expanduser().absolute()
    path = target.parent / f".{target.name}.lock"
    while True:
        try:
            handle = open(path, "a+", encoding="utf-8")  # held open (and locked) until the run ends
        except OSError as error:
            raise OutputDirError(
                f"Cannot write into {target.parent} ({error.strerror or error}); choose another output folder."
            ) from error
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise OutputDirError(
                f"Another run (process {holder}) is writing the output folder {target}; wait for it to finish or "
                "choose another output folder."
            ) from None
        # The lock file may have been removed by the run that held it, between our open and our lock: retry then.
        if path.exists() and os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()


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


def _is_disk_full(error: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when a library reports it in its own error type (safetensors' "os error 28")."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return True
        text = str(error)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


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
        raise OutputDirError(f"Cannot create {parent} ({error.strerror or error}); choose another output folder.") from error
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


def _merge_into(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    for source in sorted(staging.rglob("*")):
        if source.is_file():
            destination = target / source.relative_to(staging)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, destination)
