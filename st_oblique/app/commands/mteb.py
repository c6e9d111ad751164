"""``st-oblique mteb``: mteb's own command line, with st-oblique models and st-oblique's offline tasks.

The arguments after ``mteb`` are mteb's (``mteb run --help``). Before mteb parses them, every model named with
``-m``/``--model`` that mteb does not know itself (a saved folder, or a Hub id outside mteb's registry) is added to
mteb's registry with :func:`st_oblique.evaluation.register_mteb_model` (st-oblique's loader: no
``trust_remote_code``, image+text modalities, ``dot`` similarity), and st-oblique's offline tasks
(``LocalSTSBenchmark``, ``LocalSciFact``, ``LocalFlickr8kT2IRetrieval``, ...) become mteb task names, read from
``--data-root``. Scores equal ``st-oblique eval --mteb-task`` on the same task.

Examples::

    st-oblique mteb run -m ./my-oblique-model -t STS16                       # online: STS16's data is on the Hub
    st-oblique mteb --data-root ../shared/data run -m ./my-oblique-model -t LocalSciFact --output-folder results
    st-oblique mteb run -m my-org/oblique-clip --model-revision main -t Flickr30kT2IRetrieval
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from st_oblique.errors import ObliqueConfigError

NAME = "mteb"
HELP = "run mteb's own command line (mteb run -m MODEL -t TASK ...) on st-oblique models and offline tasks"
DESCRIPTION = (
    "mteb's command line (see `st-oblique mteb run --help`), run after registering the models named with -m "
    "(folders and Hub ids mteb does not know) with st-oblique's loader, and st-oblique's offline tasks "
    "(LocalSTSBenchmark, LocalSICK-R, LocalSciFact, LocalImagenetteZeroShot, LocalFlickr8kT2IRetrieval, "
    "LocalFlickr8kI2TRetrieval) as mteb task names."
)
MODEL_OPTIONS = ("-m", "--model")
REVISION_OPTIONS = ("--model-revision", "--model_revision")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root", type=Path, help="folder holding the offline tasks' data (default: $ST_OBLIQUE_DATA)"
    )
    parser.add_argument(
        "--name", help="mteb name for the -m model, 'organization/model_name' (default: the Hub id, or local/<folder>)"
    )
    parser.add_argument(
        "mteb_args",
        nargs=argparse.REMAINDER,
        metavar="MTEB_ARGS",
        help="mteb's subcommand and its options, e.g. run -m ./my-model -t STS16 --output-folder results",
    )


def run(args: argparse.Namespace) -> None:
    # mteb and the models are imported when the command runs, so that `--help` answers at once
    from st_oblique import _compat
    from st_oblique.evaluation.mteb_registry import register_mteb_model
    from st_oblique.evaluation.mteb_tasks import LOCAL_TASKS

    mteb_args = list(args.mteb_args)
    if not mteb_args:
        raise ObliqueConfigError("Give mteb's arguments, e.g. `st-oblique mteb run -m ./my-model -t STS16`.")
    for task_class in LOCAL_TASKS.values():
        _compat.register_mteb_task(task_class)
    revision = _option_value(mteb_args, REVISION_OPTIONS)
    for position, model in _model_arguments(mteb_args):
        if not _needs_registration(model):
            continue
        meta = register_mteb_model(model, name=args.name, revision=revision)
        print(f"st-oblique mteb: {model} registered in mteb as {meta.name} (revision {meta.revision})")
        mteb_args[position] = (
            meta.name if mteb_args[position] == model else f"{mteb_args[position].split('=')[0]}={meta.name}"
        )

    previous_data = os.environ.get("ST_OBLIQUE_DATA")
    if args.data_root is not None:
        os.environ["ST_OBLIQUE_DATA"] = str(args.data_root)  # where the Local* task classes look when mteb builds them
    try:
        _compat.run_mteb_cli(mteb_args)
    except SystemExit as exit_request:  # --help, or a usage error mteb's parser has printed
        if exit_request.code not in (0, None):
            raise ObliqueConfigError(f"mteb refused the arguments {mteb_args} (its message is above).") from None
    finally:
        if args.data_root is not None:
            if previous_data is None:
                os.environ.pop("ST_OBLIQUE_DATA", None)
            else:
                os.environ["ST_OBLIQUE_DATA"] = previous_data


def _model_arguments(argv: Sequence[str]) -> list[tuple[int, str]]:
    """``(position, model)`` of every ``-m MODEL`` / ``--model MODEL`` / ``--model=MODEL`` in ``argv``."""
    found = []
    for position, arg in enumerate(argv):
        if arg in MODEL_OPTIONS and position + 1 < len(argv):
            found.append((position + 1, argv[position + 1]))
        elif arg.startswith("--model="):
            found.append((position, arg.split("=", 1)[1]))
    return found


def _option_value(argv: Sequence[str], options: Sequence[str]) -> str | None:
    for position, arg in enumerate(argv):
        if arg in options and position + 1 < len(argv):
            return argv[position + 1]
        if "=" in arg and arg.split("=", 1)[0] in options:
            return arg.split("=", 1)[1]
    return None


def _needs_registration(model: str) -> bool:
    """A folder always; a Hub id unless mteb has its own implementation of it (then mteb's is used)."""
    from st_oblique import _compat
    from st_oblique.evaluation.mteb_registry import is_registered_by_st_oblique

    if Path(model).is_dir():
        return True
    meta = _compat.mteb_registered_model_meta(model)
    return meta is None or is_registered_by_st_oblique(meta)
