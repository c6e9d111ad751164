"""The ``st-oblique`` command: one parser over the subcommands of :mod:`st_oblique.app.commands`.

Argument parsing and error reporting only; each command's work is in importable functions (the library, or the
app's pipelines). Every option of every subcommand can also come from ``--config FILE`` (YAML or JSON, one
mechanism: :mod:`st_oblique.app.options`).
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
import importlib
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Sequence

from huggingface_hub.errors import HfHubHTTPError

from st_oblique._version import __version__
from st_oblique.app.commands import COMMAND_MODULES
from st_oblique.app.options import parse_args_with_config, positive_int
from st_oblique.app.threads import configure_threads
from st_oblique.errors import ObliqueConfigError, ObliqueError, one_line

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
    """The ``st-oblique`` parser and its subcommand parsers (``{name: parser}``), from :data:`COMMAND_MODULES`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO level)")
    common.add_argument("--debug", action="store_true", help="show the full traceback of errors")
    common.add_argument(
        "--threads", type=positive_int, metavar="N",
        help="torch's CPU threads (default: one per core); on a machine busy with other work, fewer threads waste "
        "less CPU time. Idle threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE unless set)",
    )

    parser = _Parser(
        prog=PROG,
        description="Build, train, evaluate and share oblique-manifold embedding models (K unit tokens of size d) "
        "for sentence-transformers. Start with `st-oblique demo`.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for module_name in COMMAND_MODULES:
        command = importlib.import_module(module_name)
        formatter = argparse.ArgumentDefaultsHelpFormatter if getattr(command, "SHOW_DEFAULTS", False) else argparse.HelpFormatter
        subparser = commands.add_parser(
            command.NAME, help=command.HELP, description=command.DESCRIPTION, parents=[common], allow_abbrev=False,
            formatter_class=formatter,
        )
        subparser.add_argument("--config", help="YAML/JSON file with any of these options (command-line values win)")
        command.add_arguments(subparser)
        subparser.set_defaults(handler=command.run)
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
    configure_threads(args.threads)  # before the command imports torch (its OpenMP runtime reads them once)
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
    print(f"{PROG}{f' {command}' if command else ''}: error: {_error_line(error)}", file=sys.stderr)
    return EXIT_BAD_INPUT if _is_bad_input(error) else EXIT_FAILURE


def _error_line(error: BaseException) -> str:
    """The error's message on one line, after its type for messages that need it (an unexpected error's)."""
    prefix = "" if _is_bad_input(error) or _explains_itself(error) else f"{type(error).__name__}: "
    return prefix + one_line(error, limit=MAX_ERROR_LENGTH - len(prefix))


def _is_bad_input(error: BaseException) -> bool:
    return isinstance(error, (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError))


def _explains_itself(error: BaseException) -> bool:
    return isinstance(error, (ObliqueError, PermissionError, HfHubHTTPError))


if __name__ == "__main__":
    sys.exit(main())
