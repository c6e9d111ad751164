"""``st-oblique mteb``: mteb's own command line, with st-oblique models and st-oblique's offline tasks.

The arguments after ``mteb`` are mteb's (``mteb run --help``). Before mteb parses them, every model named with
``-m``/``--model`` that mteb does not know itself (a saved folder, or a Hub id outside mteb's registry) is added to
mteb's registry with :func:`st_oblique.evaluation.register_mteb_model` (st-oblique's loader: no
``trust_remote_code``, image+text modalities, ``dot`` similarity), and st-oblique's offline tasks
(``LocalSTSBenchmark``, ``LocalSciFact``, ``LocalFlickr8kT2IRetrieval``, ...) become mteb task names, read from
``--data-root``. Scores equal ``st-oblique eval --mteb-task`` on the same task. Encodings show progress bars
(``--no-progress`` hides them), and after ``mteb run`` the main score of each task is printed with the JSON file
it is in.

Examples::

    st-oblique mteb run -m ./my-oblique-model -t STS16                       # online: STS16's data is on the Hub
    st-oblique mteb --data-root ../shared/data run -m ./my-oblique-model -t LocalSciFact --output-folder results
    st-oblique mteb run -m my-org/oblique-clip --model-revision main -t Flickr30kT2IRetrieval
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
OUTPUT_OPTIONS = ("--output-folder", "--output_folder")
TASK_OPTIONS = ("-t", "--tasks")
MTEB_DEFAULT_OUTPUT = "results"
"""``mteb run``'s default ``--output-folder``."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root", type=Path, help="folder holding the offline tasks' data (default: $ST_OBLIQUE_DATA)"
    )
    parser.add_argument(
        "--name", help="mteb name for the -m model, 'organization/model_name' (default: the Hub id, or local/<folder>)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars over the encodings")
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
    started = time.time()
    models = []
    for position, model in _model_arguments(mteb_args):
        if not _needs_registration(model):
            models.append(_compat.mteb_registered_model_meta(model))
            continue
        meta = register_mteb_model(model, name=args.name, revision=revision, show_progress_bar=not args.no_progress)
        models.append(meta)
        print(f"st-oblique mteb: {model} registered in mteb as {meta.name} (revision {meta.revision})")
        mteb_args[position] = (
            meta.name if mteb_args[position] == model else f"{mteb_args[position].split('=')[0]}={meta.name}"
        )

    previous_data = os.environ.get("ST_OBLIQUE_DATA")
    if args.data_root is not None:
        os.environ["ST_OBLIQUE_DATA"] = str(args.data_root)  # where the Local* task classes look when mteb builds them
    try:
        _compat.run_mteb_cli(mteb_args)
        if mteb_args[0] == "run":
            output = Path(_option_value(mteb_args, OUTPUT_OPTIONS) or MTEB_DEFAULT_OUTPUT)
            print(scores_summary([meta for meta in models if meta is not None], output,
                                 _option_values(mteb_args, TASK_OPTIONS), since=started))
    except SystemExit as exit_request:  # --help, or a usage error mteb's parser has printed
        if exit_request.code not in (0, None):
            raise ObliqueConfigError(f"mteb refused the arguments {mteb_args} (its message is above).") from None
    finally:
        if args.data_root is not None:
            if previous_data is None:
                os.environ.pop("ST_OBLIQUE_DATA", None)
            else:
                os.environ["ST_OBLIQUE_DATA"] = previous_data


def scores_summary(models: Sequence[Any], output: Path, tasks: Sequence[str], *, since: float) -> str:
    """The main score of each task of each model, with the JSON file mteb wrote it to.

    Args:
        models: the ``mteb.ModelMeta`` of the models run.
        output: ``mteb run``'s ``--output-folder``.
        tasks: the task names given with ``-t`` (empty: every result file written since ``since``).
        since: the run's start (``time.time()``).
    """
    import mteb

    lines = []
    for meta in models:
        folder = output / "results" / meta.model_name_as_path() / (meta.revision or "no_revision_available")
        if tasks:
            files = [(task, folder / f"{task}.json") for task in tasks]
        else:
            files = [(path.stem, path) for path in sorted(folder.glob("*.json"))
                     if path.name != "model_meta.json" and path.stat().st_mtime >= since]
        lines.append(f"st-oblique mteb: {meta.name} (revision {meta.revision}), results in {folder}/")
        width = max([len(task) for task, _ in files], default=0)
        for task, path in files:
            if not path.is_file():
                lines.append(f"  {task.ljust(width)}  no result (see mteb's messages above)")
                continue
            result = mteb.TaskResult.from_disk(path)
            metric = _main_metric(task)
            lines.append(f"  {task.ljust(width)}  main score{f' ({metric})' if metric else ''} "
                         f"{result.get_score():.4f}  {path.name}")
        if not files:
            lines.append("  no result written (see mteb's messages above)")
    return "\n".join(lines)


def _main_metric(task: str) -> str | None:
    import mteb

    try:
        return mteb.get_task(task).metadata.main_score
    except Exception:  # a task mteb cannot build here: the score is still in the file
        return None


def _option_values(argv: Sequence[str], options: Sequence[str]) -> list[str]:
    """The values after ``-t A B C`` (up to the next option)."""
    for position, arg in enumerate(argv):
        if arg in options:
            values = []
            for value in argv[position + 1:]:
                if value.startswith("-"):
                    break
                values.append(value)
            return values
    return []


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
