"""``st-oblique push``: push a saved model folder to the Hugging Face Hub with its card and evaluation results."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "push"
HELP = "push a saved model folder to the Hugging Face Hub with its card and evaluation results"
DESCRIPTION = HELP
SHOW_DEFAULTS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the saved model folder (e.g. a `st-oblique train` output folder)")
    parser.add_argument("repo_id", help="the Hub repository, user/name or organization/name")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="push to this branch (created from main when missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--exist-ok", action=argparse.BooleanOptionalAction, default=True,
                        help="push to an existing repository")
    parser.add_argument("--results", help="evaluation results for the card (default: MODEL/eval/summary.json if present)")
    parser.add_argument("--no-results", action="store_true", help="push without evaluation results")
    parser.add_argument("--commit-message", help="default: 'Upload oblique model (K=.., d=..)' with the main scores")
    parser.add_argument("--token", help="a Hub token with write access (default: `hf auth login` or $HF_TOKEN)")


def run(args: argparse.Namespace) -> None:
    from st_oblique.model.push import (
        push_to_hub,  # heavy (torch, sentence-transformers): imported when the command runs
    )

    folder = Path(args.model)  # push_to_hub checks that it is a saved model folder
    results = None
    if not args.no_results:
        default = folder / "eval" / "summary.json"
        results = args.results or (str(default) if default.is_file() else None)
    url = push_to_hub(
        str(folder), args.repo_id, token=args.token, private=args.private or None, revision=args.revision,
        create_pr=args.create_pr, exist_ok=args.exist_ok, commit_message=args.commit_message,
        evaluation_results=results,
    )
    print(f"Pushed {folder} to {args.repo_id}{' with results from ' + str(results) if results else ''}: {url}")
