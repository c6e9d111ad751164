"""``st-oblique demo``: train, evaluate, save and reload a small oblique image-text model, offline."""

from __future__ import annotations

import argparse

from st_oblique.app.options import non_negative_int, positive_int

NAME = "demo"
HELP = "train, evaluate, save and reload a small oblique image-text model offline (about a minute on two CPU cores)"
DESCRIPTION = (
    "Train a small oblique image-text model from random weights on scikit-learn's bundled digits, evaluate it "
    "zero-shot against the untrained model and chance, save it with its card and a plot, reload it and check "
    "the embeddings. A pipeline demonstration, not a quality claim."
)
SHOW_DEFAULTS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="st-oblique-demo", help="where the demo's model and reports go")
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps (default: 60, or 6 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (accuracy stays near chance)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")


def run(args: argparse.Namespace) -> None:
    from st_oblique.app.demo import run_demo  # the training stack, imported only when this command runs

    result = run_demo(
        args.output_dir, steps=args.steps, quick=args.quick, seed=args.seed, overwrite=args.overwrite,
        progress=args.progress, command=args.command_line,
    )
    print(result.summary())
