"""The ``st-oblique`` command: ``demo``, ``train``, ``eval``, ``compare``, ``push``, ``info``.

Argument parsing only; the work is in importable functions (:func:`st_oblique.app.demo.run_demo`,
:func:`st_oblique.app.train_pipeline.train`, :func:`st_oblique.evaluation.run_evaluation` /
:func:`~st_oblique.evaluation.compare_results`, :func:`st_oblique.hub.push_to_hub`,
:func:`st_oblique.describe_model`). Every option can also come from ``--config FILE`` (YAML or JSON).
Bad input ends with one line ``st-oblique <command>: error: ...`` on stderr and exit status 2 (1 for failures
that are not the input's fault); ``--debug`` shows the traceback instead.

Examples::

    st-oblique demo
    st-oblique train --backbone dual --text-model ../shared/weights/all-MiniLM-L6-v2 \\
        --image-model ../shared/weights/tf_efficientnet_lite0 --lock-image-tower \\
        --captions ../shared/data/flickr8k_1k/captions.tsv --images ../shared/data/flickr8k_1k/flickr8k_1k_images_256.tar \\
        --eval-dataset imagenette --data-root ../shared/data --output-dir runs/lit-oblique
    st-oblique info runs/lit-oblique
    accelerate launch --multi_gpu --num_processes 2 -m st_oblique train --config run.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub.errors import HfHubHTTPError

from st_oblique.app.options import add_dataclass_options, parse_args_with_config, write_config_file
from st_oblique.errors import ObliqueConfigError, ObliqueError

__all__ = ["build_parser", "main"]

PROG = "st-oblique"
EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
MAX_ERROR_LENGTH = 1200


class _Parser(argparse.ArgumentParser):
    """argparse's parser with its usage errors on one line (``st-oblique train: error: ... (see --help)``)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``st-oblique`` parser and its subcommand parsers (``{name: parser}``)."""
    from st_oblique import __version__
    from st_oblique.app.evaluation_options import add_compare_arguments, add_run_arguments
    from st_oblique.app.train_config import TrainConfig

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO level)")
    common.add_argument("--debug", action="store_true", help="show the full traceback of errors")

    parser = _Parser(
        prog=PROG,
        description="Build, train, evaluate and share oblique-manifold embedding models (K unit tokens of size d) "
        "for sentence-transformers. Start with `st-oblique demo`.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help_text, description=description or help_text, parents=[common], allow_abbrev=False,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter if name in ("demo", "push") else argparse.HelpFormatter,
        )

    demo = command(
        "demo", "train, evaluate, save and reload a small oblique image-text model offline (a few minutes on a CPU)",
        "Train a small oblique image-text model from random weights on scikit-learn's bundled digits, evaluate it "
        "zero-shot against the untrained model and chance, save it with its card and a plot, reload it and check "
        "the embeddings. A pipeline demonstration, not a quality claim.",
    )
    demo.add_argument("--config", help="YAML/JSON file with any of these options")
    demo.add_argument("--output-dir", default="st-oblique-demo", help="where the demo's model and reports go")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: 60, or 6 with --quick)")
    demo.add_argument("--quick", action="store_true", help="a fast smoke run (accuracy stays near chance)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    demo.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")
    demo.set_defaults(handler=_demo)

    train = command(
        "train", "train an oblique model (HF CLIP, open_clip, a text encoder, or text + image towers)",
        "Build an oblique model, train it with SentenceTransformerTrainer (accelerate launch / torchrun work "
        "unchanged), evaluate it and save model, card, train_config.yaml, training_report.json and training.png "
        "into --output-dir (written completely or not at all). Every option can be set in --config.",
    )
    train.add_argument("--config", help="YAML/JSON file with any of these options (e.g. a run's train_config.yaml)")
    add_dataclass_options(train, TrainConfig)
    train.set_defaults(handler=_train)

    evaluate = command(
        "eval", "evaluate one or more models side by side (zero-shot classification, retrieval, MTEB)",
        "Zero-shot classification and retrieval (CLIP_benchmark's protocol, token-wise template averaging for "
        "oblique models) and MTEB tasks, for any SentenceTransformer; writes records/, summary.json, results.md, "
        "results.png and eval_config.yaml into --output-dir.",
    )
    add_run_arguments(evaluate)
    evaluate.set_defaults(handler=_eval)

    compare = command("compare", "tabulate earlier evaluation runs side by side")
    compare.add_argument("--config", help="YAML/JSON file with any of these options")
    add_compare_arguments(compare)
    compare.set_defaults(handler=_compare)

    push = command("push", "push a saved model folder to the Hugging Face Hub with its card and evaluation results")
    push.add_argument("--config", help="YAML/JSON file with any of these options")
    push.add_argument("model", help="the saved model folder (e.g. a `st-oblique train` output folder)")
    push.add_argument("repo_id", help="the Hub repository, user/name or organization/name")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", help="push to this branch (created from main when missing)")
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    push.add_argument("--exist-ok", action=argparse.BooleanOptionalAction, default=True,
                      help="push to an existing repository")
    push.add_argument("--results", help="evaluation results for the card (default: MODEL/eval/summary.json if present)")
    push.add_argument("--no-results", action="store_true", help="push without evaluation results")
    push.add_argument("--commit-message", help="default: 'Upload oblique model (K=.., d=..)' with the main scores")
    push.add_argument("--token", help="a Hub token with write access (default: `hf auth login` or $HF_TOKEN)")
    push.set_defaults(handler=_push)

    info = command("info", "describe a saved oblique model (K, d, towers, similarity, scale, size, training)")
    info.add_argument("--config", help="YAML/JSON file with any of these options")
    info.add_argument("model", help="a saved model folder or Hub id")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(handler=_info)
    return parser, dict(commands.choices)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``st-oblique`` with ``argv`` (default: the process's arguments); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = build_parser()
    try:
        args = parse_args_with_config(parser, argv, subparsers)
    except SystemExit as exit_request:  # --help, --version, or a usage error argparse has printed
        return int(exit_request.code or 0) if not isinstance(exit_request.code, str) else EXIT_BAD_INPUT
    except ObliqueConfigError as error:
        command = next((arg for arg in argv if arg in subparsers), None)
        return _report_error(command, error, debug="--debug" in argv)
    args.command_line = shlex.join([PROG, *argv])
    _interrupt_on_sigterm()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        args.handler(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted; nothing was written to the output folder.", file=sys.stderr)
        return 130
    except Exception as error:
        return _report_error(args.command, error, debug=args.debug)
    return 0


def _interrupt_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, a scheduler's or torchrun's stop) into KeyboardInterrupt, so that a stopped run
    removes its staging folder like an interrupted one (Python's default SIGTERM handling runs no cleanup)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _report_error(command: str | None, error: BaseException, *, debug: bool) -> int:
    if debug:
        raise error
    print(f"{PROG}{f' {command}' if command else ''}: error: {one_line(error)}", file=sys.stderr)
    return EXIT_BAD_INPUT if _is_bad_input(error) else EXIT_FAILURE


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's without quotes; the type for messages that need it)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    message = " ".join(str(message).split()) or type(error).__name__
    if not _is_bad_input(error) and not _explains_itself(error):
        message = f"{type(error).__name__}: {message}"
    return message if len(message) <= MAX_ERROR_LENGTH else message[: MAX_ERROR_LENGTH - 3] + "..."


def _is_bad_input(error: BaseException) -> bool:
    return isinstance(error, (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError))


def _explains_itself(error: BaseException) -> bool:
    return isinstance(error, (ObliqueError, PermissionError, HfHubHTTPError))


# -- handlers ----------------------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> None:
    from st_oblique.app.demo import run_demo

    result = run_demo(
        args.output_dir, steps=args.steps, quick=args.quick, seed=args.seed, overwrite=args.overwrite,
        progress=args.progress, command=args.command_line,
    )
    print(result.summary())


def _train(args: argparse.Namespace) -> None:
    from st_oblique.app.train_pipeline import TrainConfig, train

    config = TrainConfig.from_dict({name: getattr(args, name) for name in TrainConfig.field_names()})
    result = train(config, command=args.command_line)
    if result is None:  # not the main process of a distributed run
        return
    folder = result.output_dir
    report = result.report
    training = report["training"]
    print(f"\nTrained {config.model_description} for {training['steps']} steps in {training['seconds']:.0f} s "
          f"({training['loss']}; loss {training['first_loss']:.4g} -> {training['final_loss']:.4g}; logit scale "
          f"{training['initial_scale']:.4g} -> {training['final_scale']:.4g}{'' if training['learnable_scale'] else ', fixed'}).")
    if "eval" in result.files:
        print((result.files["eval"] / "results.md").read_text(encoding="utf-8"))
    print(f"Model and card: {folder} (README.md)")
    for key in ("config", "report", "plot", "eval", "eval_untrained"):
        if key in result.files:
            print(f"  {key + ':':16}{result.files[key]}")
    if result.hub_url:
        print(f"Pushed to the Hub: {result.hub_url}")


def _eval(args: argparse.Namespace) -> None:
    from st_oblique.app.demo import register_demo_eval_set
    from st_oblique.app.evaluation_options import run_from_args
    from st_oblique.app.output_dir import check_writable
    from st_oblique.evaluation.model_loading import parse_model_spec

    if not args.models:
        raise ObliqueConfigError("Give at least one model: --model PATH or --model NAME=PATH (repeat to compare).")
    for spec in args.models:
        _check_model(parse_model_spec(spec)[1])
    check_writable(args.output_dir)
    register_demo_eval_set()
    run_from_args(args)
    settings = {key: value for key, value in vars(args).items()
                if key not in ("handler", "command", "command_line", "config", "verbose", "debug")}
    write_config_file(settings, Path(args.output_dir) / "eval_config.yaml",
                      header=f"Options of: {args.command_line}\nRepeat with: st-oblique eval --config eval_config.yaml")


def _compare(args: argparse.Namespace) -> None:
    from st_oblique.app.evaluation_options import compare_from_args
    from st_oblique.app.output_dir import check_writable

    check_writable(args.output_dir)
    compare_from_args(args)


def _push(args: argparse.Namespace) -> None:
    from st_oblique.hub import push_to_hub

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


def _info(args: argparse.Namespace) -> None:
    from st_oblique.description import describe_model
    from st_oblique.evaluation.model_loading import load_model

    _check_model(args.model)
    path = Path(args.model)
    description = describe_model(load_model(args.model, device="cpu"))
    training = _training_summary(path / "training_report.json") if path.is_dir() else None
    if args.json:
        print(json.dumps({"model": args.model, **description.to_dict(), "training": training}, indent=2))
        return
    print(description.to_text())
    if training:
        print(f"\nTraining ({path / 'training_report.json'}):")
        print(_training_text(training))


def _check_model(model: str) -> None:
    """Fail before any work on a model that is neither a saved model folder nor a Hub id."""
    from st_oblique.description import is_hub_model_id

    path = Path(model)
    if not path.exists() and not is_hub_model_id(model):
        raise FileNotFoundError(f"Model not found: {model} (a saved model folder or a Hub id).")
    if path.is_dir() and not (path / "modules.json").is_file():
        raise ObliqueConfigError(f"{model} is not a saved Sentence Transformers model (no modules.json).")


def _training_summary(report_path: Path) -> dict[str, Any] | None:
    """The essentials of a ``training_report.json`` (None when the folder has none)."""
    if not report_path.is_file():
        return None
    report = json.loads(report_path.read_text(encoding="utf-8"))
    training = report.get("training", {})
    evaluation = report.get("evaluation", {})
    scores = {
        f"{record['dataset']} {record.get('main_metric')}": record["metrics"].get(record.get("main_metric"))
        for record in evaluation.get("trained", [])
    }
    return {
        "backbone": report.get("config", {}).get("backbone"),
        "data": report.get("data", {}).get("description"),
        "steps": training.get("steps"),
        "parameters": report.get("parameters"),
        "loss": training.get("loss"),
        "final_loss": training.get("final_loss"),
        "learnable_scale": training.get("learnable_scale"),
        "final_scale": training.get("final_scale"),
        "seconds": training.get("seconds"),
        "scores": scores,
        "command": report.get("command"),
    }


def _training_text(training: dict[str, Any]) -> str:
    rows = [
        ("trained on", str(training["data"])),
        ("training", f"{training['steps']} steps of {training['loss']} in {training['seconds']} s, final loss "
                     f"{training['final_loss']:.4g}, {'learned' if training['learnable_scale'] else 'fixed'} scale "
                     f"{training['final_scale']:.4g}"),
        *((("trained parameters", f"{parameters['trainable']:,} ({parameters['frozen']:,} frozen)"),)
          if (parameters := training.get("parameters")) else ()),
        *((f"score: {name}", f"{value:.4f}" if isinstance(value, float) else str(value))
          for name, value in training["scores"].items()),
        ("command", str(training["command"])),
    ]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


if __name__ == "__main__":
    sys.exit(main())
