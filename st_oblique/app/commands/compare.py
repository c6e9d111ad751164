"""``st-oblique compare``: tabulate earlier evaluation runs side by side (:func:`st_oblique.evaluation.compare_results`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from st_oblique.output_folder import check_writable
from st_oblique.result_records import EvaluationResult

NAME = "compare"
HELP = "tabulate earlier evaluation runs side by side"
DESCRIPTION = HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", type=Path, help="result folders or JSON files of earlier runs")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the comparison is written")
    parser.add_argument("--title", help="title of the table and plot")



def run(args: argparse.Namespace) -> list[EvaluationResult]:
    from st_oblique.evaluation.runner import compare_results  # heavy (torch, mteb): imported when the command runs

    check_writable(args.output_dir)
    results, paths = compare_results(args.results, args.output_dir, title=args.title)
    print(paths["table"].read_text(encoding="utf-8"))
    print(f"Comparison written to {args.output_dir}")
    return results
