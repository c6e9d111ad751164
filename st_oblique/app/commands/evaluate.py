"""``st-oblique eval``: zero-shot classification and retrieval (CLIP_benchmark's protocol) and MTEB tasks, for one
or more models side by side (:func:`st_oblique.evaluation.run_evaluation`).

Example::

    st-oblique eval --model baseline=path/to/clip --model oblique=path/to/oblique-clip \\
        --dataset imagenette --dataset flickr8k_1k --mteb-task local --data-root ../shared/data \\
        --output-dir results/clip-vs-oblique
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from st_oblique.app.model_location import check_model_location
from st_oblique.app.options import (
    add_repeatable_option,
    non_negative_int,
    positive_int,
    token_counts,
    write_config_file,
)
from st_oblique.devices import check_device
from st_oblique.errors import ObliqueConfigError
from st_oblique.output_folder import check_writable
from st_oblique.result_records import EvaluationResult

NAME = "eval"
HELP = "evaluate one or more models side by side (zero-shot classification, retrieval, MTEB)"
DESCRIPTION = (
    "Zero-shot classification and retrieval (CLIP_benchmark's protocol, token-wise template averaging for "
    "oblique models) and MTEB tasks, for any SentenceTransformer; writes records/, summary.json, results.md, "
    "results.png and eval_config.yaml into --output-dir."
)
NOT_SETTINGS = ("handler", "command", "command_line", "config", "verbose", "debug")
"""Namespace entries that are not options of the run (left out of eval_config.yaml)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_repeatable_option(
        parser, "--model", dest="models", metavar="[NAME=]PATH",
        help="model folder or Hub id, optionally named (repeat to compare models side by side)",
    )
    add_repeatable_option(
        parser, "--dataset", dest="datasets", metavar="NAME",
        help="zero-shot dataset: imagenette, fashion_mnist, mnist, flickr8k_1k, sklearn_digits, wds/<name>, hf:<repo>, "
        "or any name with --dataset-path (repeatable)",
    )
    add_repeatable_option(
        parser, "--dataset-path", dest="dataset_paths", metavar="[NAME=]PATH",
        help="where a dataset is (a bare PATH applies to the only --dataset)",
    )
    parser.add_argument("--data-root", type=Path, help="folder holding the datasets (default: $ST_OBLIQUE_DATA)")
    add_repeatable_option(
        parser, "--mteb-task", dest="mteb_tasks", metavar="NAME",
        help="MTEB task: 'local' (all offline tasks), a local task (LocalSTSBenchmark...), or any mteb task (online)",
    )
    add_repeatable_option(
        parser, "--mteb-benchmark", dest="mteb_benchmarks", metavar="NAME",
        help="MTEB benchmark, e.g. 'MTEB(eng, v2)' or 'MIEB(lite)' (online)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("evaluation_results"), help="results folder")
    parser.add_argument("--max-samples", type=positive_int, help="evaluate random subsets of this size (quick checks)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps... (default: the model's)")
    parser.add_argument("--num-workers", type=non_negative_int, default=0, help="image decoding/preprocessing workers")
    add_repeatable_option(
        parser, "--template", dest="templates", metavar="TEMPLATE",
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
    parser.add_argument(
        "--num-tokens", type=token_counts, metavar="K[,K...]",
        help="evaluate oblique models at their first k whole tokens (truncate_dim=k*d, no renormalization); a list "
        "such as 1,2,4,8,16 gives one result row per k (default: all K tokens)",
    )
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--title", help="title of the table and plot")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")



def run(args: argparse.Namespace) -> list[EvaluationResult]:
    # torch, sentence-transformers and mteb are imported when the command runs, so that `--help` answers at once
    from st_oblique.app.demo import register_demo_eval_set
    from st_oblique.evaluation.model_loading import parse_model_spec
    from st_oblique.evaluation.runner import run_evaluation

    if not args.models:
        raise ObliqueConfigError("Give at least one model: --model PATH or --model NAME=PATH (repeat to compare).")
    for spec in args.models:
        check_model_location(parse_model_spec(spec)[1])
    check_device(args.device, name="--device")
    check_writable(args.output_dir)
    register_demo_eval_set()
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
        command=args.command_line,
        token_counts=args.num_tokens,
    )
    settings = {key: value for key, value in vars(args).items() if key not in NOT_SETTINGS}
    write_config_file(settings, Path(args.output_dir) / "eval_config.yaml",
                      header=f"Options of: {args.command_line}\nRepeat with: st-oblique eval --config eval_config.yaml")
    print((Path(args.output_dir) / "results.md").read_text(encoding="utf-8"))
    print(f"Results written to {args.output_dir}")
    return results



def _dataset_paths(entries: Sequence[str], datasets: Sequence[str]) -> dict[str, str]:
    """``--dataset-path`` entries as ``{dataset: path}`` (a bare PATH applies to the only ``--dataset``)."""
    paths = {}
    for entry in entries:
        name, separator, path = entry.partition("=")
        if separator and name in datasets:
            paths[name] = path
        elif len(datasets) == 1:
            paths[datasets[0]] = entry
        else:
            raise ObliqueConfigError(f"--dataset-path {entry!r}: write NAME=PATH to say which of {list(datasets)} it is for.")
    return paths
