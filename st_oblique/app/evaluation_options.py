"""Command-line layer of the evaluation harness: argument parsing only, everything else is in
:func:`~st_oblique.evaluation.run_evaluation` and :func:`~st_oblique.evaluation.compare_results`.

Used by ``python -m evaluation`` (repository) and reusable by another CLI: ``add_run_arguments(parser)`` +
``run_from_args(args)``, ``add_compare_arguments(parser)`` + ``compare_from_args(args)``.

Example::

    python -m evaluation run --model baseline=path/to/clip --model oblique=path/to/oblique-clip \\
        --dataset imagenette --dataset flickr8k_1k --mteb-task local --data-root ../shared/data \\
        --output-dir results/clip-vs-oblique
    python -m evaluation compare results/run-a results/run-b --output-dir results/a-vs-b
    python -m evaluation list
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Command",
    "add_compare_arguments",
    "add_run_arguments",
    "build_parser",
    "compare_from_args",
    "list_from_args",
    "main",
    "run_from_args",
]


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``run`` (evaluate models)."""
    parser.add_argument("--config", type=Path, help="YAML file with any of these options (command-line values win)")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="[NAME=]PATH",
        help="model folder or Hub id, optionally named (repeat to compare models side by side)",
    )
    parser.add_argument(
        "--dataset",
        action="append",
        dest="datasets",
        default=None,
        metavar="NAME",
        help="zero-shot dataset: imagenette, fashion_mnist, mnist, flickr8k_1k, sklearn_digits, wds/<name>, hf:<repo>, "
        "or any name with --dataset-path (repeatable)",
    )
    parser.add_argument(
        "--dataset-path",
        action="append",
        dest="dataset_paths",
        default=None,
        metavar="[NAME=]PATH",
        help="where a dataset is (a bare PATH applies to the only --dataset)",
    )
    parser.add_argument("--data-root", type=Path, help="folder holding the datasets (default: $ST_OBLIQUE_DATA)")
    parser.add_argument(
        "--mteb-task",
        action="append",
        dest="mteb_tasks",
        default=None,
        metavar="NAME",
        help="MTEB task: 'local' (all offline tasks), a local task (LocalSTSBenchmark...), or any mteb task (online)",
    )
    parser.add_argument(
        "--mteb-benchmark",
        action="append",
        dest="mteb_benchmarks",
        default=None,
        metavar="NAME",
        help="MTEB benchmark, e.g. 'MTEB(eng, v2)' or 'MIEB(lite)' (online)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("evaluation_results"), help="results folder")
    parser.add_argument("--max-samples", type=int, help="evaluate random subsets of this size (quick checks)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps... (default: the model's)")
    parser.add_argument("--num-workers", type=int, default=0, help="image decoding/preprocessing workers")
    parser.add_argument(
        "--template",
        action="append",
        dest="templates",
        default=None,
        metavar="TEMPLATE",
        help="prompt template with {c}, e.g. 'a photo of a {c}.' (repeatable; overrides the defaults)",
    )
    parser.add_argument("--templates-file", type=Path, help="CLIP_benchmark-style templates JSON")
    parser.add_argument("--classnames-file", type=Path, help="CLIP_benchmark-style class names JSON")
    parser.add_argument(
        "--mteb-overwrite",
        default="only-missing",
        choices=["always", "never", "only-missing", "only-cache"],
        help="mteb's cache strategy for Hub tasks (local tasks always run)",
    )
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--title", help="title of the table and plot")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def add_compare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``compare`` (tabulate earlier runs side by side)."""
    parser.add_argument("results", nargs="+", type=Path, help="result folders or JSON files of earlier runs")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the comparison is written")
    parser.add_argument("--title", help="title of the table and plot")
    return parser


def run_from_args(args: argparse.Namespace) -> list:
    """Run :func:`~st_oblique.evaluation.run_evaluation` from parsed ``run`` arguments; prints the table."""
    from st_oblique.evaluation.runner import run_evaluation

    if not args.models:
        raise SystemExit("error: give at least one --model")
    datasets = args.datasets or []
    results = run_evaluation(
        args.models,
        datasets=datasets,
        mteb_tasks=args.mteb_tasks or [],
        output_dir=args.output_dir,
        mteb_benchmarks=args.mteb_benchmarks or [],
        dataset_paths=_dataset_paths(args.dataset_paths or [], datasets),
        data_root=args.data_root,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.num_workers,
        templates=args.templates,
        templates_file=args.templates_file,
        classnames_file=args.classnames_file,
        mteb_overwrite_strategy=args.mteb_overwrite,
        trust_remote_code=args.trust_remote_code,
        show_progress_bar=not args.no_progress,
        title=args.title,
        command=getattr(args, "command_line", None),
    )
    print((Path(args.output_dir) / "results.md").read_text(encoding="utf-8"))
    print(f"Results written to {args.output_dir}")
    return results


def compare_from_args(args: argparse.Namespace) -> list:
    """Run :func:`~st_oblique.evaluation.compare_results` from parsed ``compare`` arguments; prints the table."""
    from st_oblique.evaluation.runner import compare_results

    results, paths = compare_results(args.results, args.output_dir, title=args.title)
    print(paths["table"].read_text(encoding="utf-8"))
    print(f"Comparison written to {args.output_dir}")
    return results


def list_from_args(args: argparse.Namespace) -> None:
    """Print the named datasets and the offline MTEB tasks."""
    from st_oblique.evaluation.datasets import DATASETS
    from st_oblique.evaluation.mteb_tasks import LOCAL_TASKS

    print("Zero-shot datasets (--dataset):")
    for spec in DATASETS.values():
        print(f"  {spec.name:16} {spec.task:24} {spec.description}  [{spec.default_path or 'no files'}]")
    print(
        "  wds/<name>       either                   CLIP_benchmark WebDataset export (Hub: clip-benchmark/wds_<name>)"
    )
    print("  hf:<repo>        either                   Hugging Face dataset with image + label/caption columns")
    print("Offline MTEB tasks (--mteb-task; 'local' = all):")
    for name, task in LOCAL_TASKS.items():
        print(
            f"  {name:26} {task.metadata.type:24} [{task.default_path if isinstance(task.default_path, str) else ''}]"
        )


Command = tuple[str, str, Callable[[argparse.ArgumentParser], Any], Callable[[argparse.Namespace], Any]]
"""An extra subcommand: ``(name, help, add_arguments(parser), handler(args))``."""


def build_parser(prog: str = "python -m evaluation", extra_commands: Sequence[Command] = ()) -> argparse.ArgumentParser:
    """The harness's parser with the ``run``, ``compare`` and ``list`` subcommands (plus ``extra_commands``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Zero-shot (CLIP_benchmark protocol) and MTEB evaluation of SentenceTransformer models, oblique or not.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(commands.add_parser("run", help="evaluate one or more models")).set_defaults(
        handler=run_from_args
    )
    add_compare_arguments(commands.add_parser("compare", help="compare earlier runs side by side")).set_defaults(
        handler=compare_from_args
    )
    commands.add_parser("list", help="list datasets and offline MTEB tasks").set_defaults(handler=list_from_args)
    for name, help_text, add_arguments, handler in extra_commands:
        add_arguments(commands.add_parser(name, help=help_text)).set_defaults(handler=handler)
    return parser


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m evaluation", extra_commands: Sequence[Command] = ()
) -> Any:
    """Parse ``argv`` (``run --config FILE`` supplies defaults from YAML) and run the chosen subcommand."""
    parser = build_parser(prog, extra_commands)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        run_parser = parser._subparsers._group_actions[0].choices["run"]
        run_parser.set_defaults(**_read_config(args.config, run_parser, argv))
        args = parser.parse_args(argv)
    args.command_line = " ".join([prog, *(shlex.quote(arg) for arg in argv)])
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.handler(args)
    except (FileNotFoundError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        parser.exit(2, f"error: {message}\n")


_CONFIG_ALIASES = {
    "model": "models",
    "dataset": "datasets",
    "dataset_path": "dataset_paths",
    "mteb_task": "mteb_tasks",
    "mteb_benchmark": "mteb_benchmarks",
    "template": "templates",
}


def _read_config(path: Path, run_parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, Any]:
    """``run`` defaults from a YAML mapping of option names (``model: [...]``, ``max-samples: 100``...).

    Options given on the command line win; for repeatable options the command line replaces the file's list.
    Paths are relative to the working directory.
    """
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values.")
    actions = {action.dest: action for action in run_parser._actions if action.dest not in ("help", "config")}
    defaults = {}
    for key, value in config.items():
        dest = key.replace("-", "_")
        dest = _CONFIG_ALIASES.get(dest, dest)
        if dest not in actions:
            raise ValueError(f"Unknown option {key!r} in {path}; known: {sorted(actions)}.")
        given = any(arg.split("=")[0] in actions[dest].option_strings for arg in argv)
        if not given:
            defaults[dest] = [str(item) for item in value] if isinstance(value, list) else value
    return defaults


def _dataset_paths(entries: Sequence[str], datasets: Sequence[str]) -> dict[str, str]:
    paths = {}
    for entry in entries:
        name, separator, path = entry.partition("=")
        if separator and name in datasets:
            paths[name] = path
        elif len(datasets) == 1:
            paths[datasets[0]] = entry
        else:
            raise ValueError(f"--dataset-path {entry!r}: write NAME=PATH to say which of {list(datasets)} it is for.")
    return paths
