"""Every command in the README's ```bash blocks is exercised: the offline ones run (with fewer steps and small
subsets), in order, in one working folder, so later commands use what earlier ones wrote; the online ones (marked
by a ``# online`` comment line in their block), the launchers for several GPUs and ``pip install`` are parsed:
every option must exist and every value must be accepted by the parser that will read it.

Commands that read ``../shared`` run on tiny stand-ins of the same layout (a tiny BERT and ViT, a caption table with
a tar of images, tiny evaluation sets), which keeps the test fast and independent of the shared folder; the same
command on the real weights and data is tests/integration/test_shared_dual_encoder.py's subject and the README's
measured LiT run.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from cli.cli_helpers import QUICK_DEMO, demo_args

import st_oblique
from st_oblique.app.cli import build_parser, main
from st_oblique.app.options import parse_args_with_config

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"

TRAIN_REDUCTION = [
    "--max-steps", "1", "--max-train-samples", "8", "--batch-size", "4", "--eval-max-samples", "20",
    "--eval-batch-size", "20", "--no-progress",
]
"""Appended to a README ``st-oblique train`` command that runs in the tests (the later option wins)."""
EVAL_REDUCTION = ["--max-samples", "60", "--no-progress"]


def readme_commands(text: str) -> list[tuple[str, list[str], bool]]:
    """``(section, argv, online)`` of every command in the ```bash blocks of ``text``, in order.

    Continuation lines (``\\``) are joined, trailing ``# comments`` dropped; a comment line starting with
    ``# online`` marks the commands after it, up to the end of its block, as needing the network, and so does one
    starting with ``# serves`` (a server that runs until stopped, such as ``st-oblique app``): both are only parsed.
    """
    commands = []
    section = ""
    for match in re.finditer(r"^(#+ [^\n]*)$|^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        if match.group(1):
            section = match.group(1).lstrip("# ").strip()
            continue
        online = False
        for line in match.group(2).replace("\\\n", " ").splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                online = online or stripped.lower().startswith(("# online", "# serves"))
                continue
            argv = shlex.split(stripped, comments=True)
            if argv:
                commands.append((section, argv, online))
    return commands


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def st_oblique_argv(argv: list[str]) -> list[str] | None:
    """The arguments of ``st-oblique`` in a README command (also under ``accelerate launch``/``torchrun -m
    st_oblique``), or None for other commands."""
    if argv[0] == "st-oblique":
        return argv[1:]
    if "-m" in argv and argv[argv.index("-m") + 1] == "st_oblique":
        return argv[argv.index("-m") + 2:]
    return None


def check_options(argv: list[str]) -> None:
    """Parse ``st-oblique ARGV`` without running it: unknown options or bad values fail here. A ``--config`` file
    that an earlier command would have written (when that command could not run here) is left out."""
    if "--config" in argv and not Path(argv[argv.index("--config") + 1]).is_file():
        position = argv.index("--config")
        argv = argv[:position] + argv[position + 2:]
    parser, subparsers = build_parser()
    try:
        args = parse_args_with_config(parser, argv, subparsers)
    except SystemExit as error:  # argparse has printed the reason, which pytest shows
        pytest.fail(f"`st-oblique {shlex.join(argv)}` does not parse (exit {error.code})")
    assert args.command == argv[0]


def check_launcher(argv: list[str]) -> None:
    """The launcher's own options (accelerate's or torchrun's parser), up to the program it launches."""
    if argv[0] == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        launch_command_parser().parse_args(argv[2:])
    elif argv[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        get_args_parser().parse_args(argv[1:])
    else:
        pytest.fail(f"unknown launcher in the README: {shlex.join(argv)}")


def check_repository_command(argv: list[str]) -> None:
    """``python -m evaluation...`` or ``python evaluation/script.py ...``: a script of this repository, run from its
    root (expensive studies; their own tests run them on small subsets). The script must exist, every option must
    be one of its options, and the files after ``--config`` must exist."""
    if argv[1] == "-m":
        package = REPO_ROOT / argv[2].replace(".", "/")
        script, options = package.with_suffix(".py") if package.with_suffix(".py").is_file() else package / "__main__.py", argv[3:]
        assert script.is_file(), f"no module {argv[2]} in the repository for `{shlex.join(argv)}`"
    else:
        script, options = REPO_ROOT / argv[1], argv[2:]
        assert script.is_file(), f"no script {argv[1]} for `{shlex.join(argv)}`"
    source = script.read_text(encoding="utf-8")
    unknown = [option for option in options if option.startswith("--") and f'"{option.split("=")[0]}"' not in source]
    if unknown:  # the parser may live in another module: ask the script itself
        usage = subprocess.run([sys.executable, *argv[1:3 if argv[1] == "-m" else 2], "--help"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=300)
        assert usage.returncode == 0, usage.stderr[-2000:]
        unknown = [option for option in unknown if option.split("=")[0] not in usage.stdout]
    assert not unknown, f"`{shlex.join(argv)}`: {unknown} are not options of {script}"
    for position, option in enumerate(options[:-1]):
        if option == "--config":
            assert (REPO_ROOT / options[position + 1]).is_file(), f"`{shlex.join(argv)}`: no {options[position + 1]}"


def test_readme_has_the_commands_it_promises():
    """The extraction sees every kind of command (an empty list would make the test below vacuous)."""
    programs = [st_oblique_argv(argv) for _, argv, _ in COMMANDS]
    subcommands = {argv[0] for argv in programs if argv}
    assert {"demo", "train", "eval", "compare", "info", "push", "export"} <= subcommands
    assert next(argv for _, argv, _ in COMMANDS if argv[0] == "st-oblique") == ["st-oblique", "demo"]
    assert ["python", "-m", "pytest"] in [argv for _, argv, _ in COMMANDS]
    assert any(online for *_, online in COMMANDS) and any(not online for *_, online in COMMANDS)
    assert {argv[0] for _, argv, _ in COMMANDS} <= {"pip", "python", "st-oblique", "accelerate", "torchrun"}
    # `st-oblique app` serves until stopped: a README command that would run it must be marked (# serves)
    servers = [argv for _, argv, online in COMMANDS if argv[:2] == ["st-oblique", "app"] and not online]
    assert all("--index-only" in argv for argv in servers), servers


def test_readme_commands(demo_run, assets, monkeypatch):
    """Run the offline commands in order (the first ``st-oblique demo`` is the session's ``demo_run``), parse
    the others."""
    demo_output, demo_result = demo_run
    assert demo_result.code == 0, demo_result.err
    workdir = demo_output.parent  # the README's relative paths (st-oblique-demo, runs/...) resolve here
    monkeypatch.chdir(workdir)
    stand_ins = shared_stand_ins(assets)
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    ran, parsed = [], []
    for section, argv, online in COMMANDS:
        command = shlex.join(argv)
        if argv[0] == "pip":
            _check_install(argv, pyproject)
            continue
        if argv == ["python", "-m", "build"]:  # the wheel of _check_install; .ci/run builds and installs it
            continue
        if argv[:3] == ["python", "-m", "pytest"]:
            assert argv == ["python", "-m", "pytest"]  # the CI command; this test is part of it
            continue
        arguments = st_oblique_argv(argv)
        if arguments is None and argv[0] == "python":
            check_repository_command(argv)
            parsed.append(command)
            continue
        assert arguments is not None, f"{section}: {command} is neither st-oblique nor a launcher of it"
        arguments = [stand_ins.get(argument, argument) for argument in arguments]
        unmapped = [argument for argument in arguments if "../shared" in argument]
        assert not unmapped, f"add a tiny stand-in for {unmapped} to test_readme.shared_stand_ins"
        if argv[0] != "st-oblique" or online:
            if argv[0] != "st-oblique":
                check_launcher(argv)
            check_options(arguments)
            parsed.append(command)
            continue
        if arguments == ["demo"]:
            assert demo_args(arguments) == ["demo", *QUICK_DEMO]  # what the demo_run fixture ran, here
            ran.append(command)
            continue
        if arguments[0] == "demo":
            arguments = demo_args(arguments)
        elif arguments[0] == "train":
            arguments = [*arguments, *TRAIN_REDUCTION]
        elif arguments[0] == "eval":
            arguments = [*arguments, *EVAL_REDUCTION]
        code = main(arguments)
        assert code == 0, f"{section}: `{command}` failed (exit {code}; the reason is printed above)"
        ran.append(command)
        _check_outputs(arguments)
    assert any(command.startswith("st-oblique eval") for command in ran), ran
    assert any(command.startswith("st-oblique info") for command in ran), ran
    assert any("push" in command for command in parsed), parsed


def _check_install(argv: list[str], pyproject: dict) -> None:
    """A README ``pip install`` installs this checkout, one of its extras (``.[dev]``, ``.[app]``...), ``build`` or
    the wheel ``python -m build`` writes, never a bare ``st-oblique`` (not on the package index yet: it would fail,
    or install another package)."""
    assert argv[1] == "install", shlex.join(argv)
    target = argv[-1]
    wheel = f"dist/st_oblique-{st_oblique.__version__}-py3-none-any.whl"
    extras = pyproject["project"]["optional-dependencies"]
    extra = re.fullmatch(r"\.\[([\w-]+)\]", target)
    assert target in {".", "build", wheel} or (extra is not None and extra.group(1) in extras), shlex.join(argv)


def _check_outputs(arguments: list[str]) -> None:
    """What a command that ran must have produced (its exit status alone could hide a no-op)."""
    if "--output-dir" in arguments:
        output = Path(arguments[arguments.index("--output-dir") + 1])
        expected = {"train": "training_report.json", "demo": "demo_report.json", "eval": "summary.json",
                    "compare": "results.md"}[arguments[0]]
        assert (output / expected).is_file(), f"{shlex.join(arguments)} wrote no {expected}"
    if arguments[0] == "train":
        report = json.loads((output / "training_report.json").read_text())
        assert report["training"]["steps"] == 1 and report["evaluation"]["trained"]
    if arguments[0] == "export":
        exported = Path(arguments[arguments.index("--output") + 1])
        config = json.loads((exported / "oblique_export_config.json").read_text())
        for variants in config["graphs"].values():
            for graphs in variants.values():
                assert all((exported / path).is_file() for path in graphs.values()), config["graphs"]
        assert st_oblique.load(str(exported)).encode(["a dog runs"]).shape[1] == config["num_tokens"] * config["token_dim"]


def shared_stand_ins(assets) -> dict[str, str]:
    """``{README argument: tiny stand-in}`` for the ``../shared`` paths of the README."""
    return {
        "../shared/weights/all-MiniLM-L6-v2": assets.bert,
        "../shared/weights/tf_efficientnet_lite0": assets.vit,
        "../shared/data/flickr8k_1k/captions.tsv": str(assets.captions),
        "../shared/data/flickr8k_1k/flickr8k_1k_images_256.tar": str(assets.images_tar),
        "../shared/data": str(assets.data_root),
    }
