"""The errors st-oblique raises on purpose: one hierarchy, every class exported from :mod:`st_oblique`.

Each message says what is wrong, where (file, column, row, option) and what to do. The classes also derive
from the built-in exception a caller would expect (``ValueError`` for bad input, ``ConnectionError`` for an
unreachable Hub), so existing ``except ValueError`` clauses keep working.

::

    ObliqueError
    ├── ObliqueLoadError          a saved model or module cannot be loaded            (ValueError)
    ├── ObliqueInputError         an input that cannot be used                        (ValueError)
    │   ├── ObliqueConfigError    an option or a config file of the st-oblique command
    │   ├── TrainingDataError     training data: a file, a column, a row
    │   ├── CheckpointError       a checkpoint that does not belong to the model being trained
    │   └── OutputDirError        an output folder that cannot be written
    ├── HubPushError              the Hub could not be reached while pushing          (ConnectionError)
    ├── PushAfterTrainingError    training succeeded, pushing its result did not      (RuntimeError)
    ├── ExportError               an exported graph does not reproduce the model      (RuntimeError)
    └── MissingExtraError         an optional package is not installed (pip line)     (ImportError)

Example::

    import st_oblique

    try:
        model = st_oblique.load("runs/my-model")
    except st_oblique.ObliqueLoadError as error:
        print(error)   # e.g. "Cannot load ObliquePooling: runs/my-model/1_ObliquePooling/config.json is missing. ..."

:func:`one_line` puts any error's message on one line, to quote it inside another message or print it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ExportError",
    "HubPushError",
    "MissingExtraError",
    "ObliqueConfigError",
    "ObliqueError",
    "ObliqueInputError",
    "ObliqueLoadError",
    "OutputDirError",
    "PushAfterTrainingError",
    "TrainingDataError",
    "one_line",
]


class ObliqueError(Exception):
    """Base class of every error st-oblique raises on purpose."""


class ObliqueLoadError(ObliqueError, ValueError):
    """A saved model, module or backbone could not be loaded: the message names the file and what is wrong."""


class ObliqueInputError(ObliqueError, ValueError):
    """An input that cannot be used (an image, a text batch, an embedding, an argument)."""


class ObliqueConfigError(ObliqueInputError):
    """An option or config file of the ``st-oblique`` command that cannot be used; the message says which."""


class TrainingDataError(ObliqueInputError):
    """Training data that cannot be used: the message names the file, column or row."""


class CheckpointError(ObliqueInputError):
    """A checkpoint to resume from that does not belong to the model being trained."""


class OutputDirError(ObliqueInputError):
    """An output folder that cannot be written (exists and is not empty, not writable, ...)."""


class HubPushError(ObliqueError, ConnectionError):
    """The Hub could not be reached while pushing; the message says which endpoint and what to check."""


class PushAfterTrainingError(ObliqueError, RuntimeError):
    """Training finished and its output folder is complete, but pushing it to the Hub failed."""


class ExportError(ObliqueError, RuntimeError):
    """Exporting a model failed: a graph could not be traced or converted, or does not reproduce the torch model;
    nothing was written."""


class MissingExtraError(ObliqueError, ImportError):
    """An optional package is not installed; the message gives the ``pip install`` line of the extra that has it."""


def one_line(error: BaseException, *, limit: int = 300, quoted: bool = False) -> str:
    """The message of ``error`` on one line of at most ``limit`` characters (cut with "..."): white space folded, a
    ``KeyError``'s without its quotes, the type's name when the message is empty.

    Args:
        error: any exception.
        limit: the longest line returned.
        quoted: for quoting inside another message (``f"Cannot read {path}: {one_line(error, quoted=True)}. Do
            ..."``): only the first line (later lines of third-party messages are details: request ids, URLs,
            tracebacks) and no final period (the quoting message adds its own).
    """
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = str(message).strip()
    if quoted:
        text = (text.splitlines() or [""])[0].rstrip(".")
    text = " ".join(text.split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
