"""Every code block of the README, in order, as a new user would run it (:mod:`readme_blocks` says how blocks are
found, marked and given local paths): the bash commands of ``st-oblique`` run (with fewer steps and small subsets)
and the python blocks run on their own, all in one working folder whose ``../shared`` holds tiny stand-ins of the
real layout, so later blocks use what earlier ones wrote. Commands marked ``# online: ...`` or ``# not run by the
README tests: ...``, the launchers for several GPUs and ``pip install`` are parsed: every option must exist and
every value must be accepted by the parser that will read it. At the end, everything the blocks created in the
working folder must be ignored by git (``.gitignore``), so running the README in a checkout leaves it clean.

The same commands on the real weights and data are tests/integration/test_shared_dual_encoder.py's subject and the
README's measured runs.
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
from readme_blocks import OFFLINE_MODEL, PYTHON, REFUSED_SPELLINGS, SHELL, readme_blocks, write_shared_stand_ins

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


BLOCKS = readme_blocks()
COMMANDS = [
    (block.section, command.argv, command.not_run is not None) for block in BLOCKS for command in block.commands
]
"""``(section, argv, not run)`` of every bash command, in order."""


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
        script = package.with_suffix(".py") if package.with_suffix(".py").is_file() else package / "__main__.py"
        options = argv[3:]
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
    """The extraction sees every kind of block (an empty list would make the test below vacuous)."""
    programs = [st_oblique_argv(argv) for _, argv, _ in COMMANDS]
    subcommands = {argv[0] for argv in programs if argv}
    assert {"demo", "train", "eval", "compare", "info", "push", "mteb", "export"} <= subcommands
    assert next(argv for _, argv, _ in COMMANDS if argv[0] == "st-oblique") == ["st-oblique", "demo"]
    assert ["python", "-m", "pytest"] in [argv for _, argv, _ in COMMANDS]
    assert any(not_run for *_, not_run in COMMANDS) and any(not not_run for *_, not_run in COMMANDS)
    assert {argv[0] for _, argv, _ in COMMANDS} <= {"pip", "python", "python3", "source", "st-oblique", "accelerate",
                                                    "torchrun"}
    assert sum(block.language == PYTHON for block in BLOCKS) >= 5
    # `st-oblique app` serves until stopped: a README command that would run it must be marked (# serves ...)
    servers = [argv for _, argv, not_run in COMMANDS if argv[:2] == ["st-oblique", "app"] and not not_run]
    assert all("--index-only" in argv for argv in servers), servers


def test_every_code_block_is_one_the_tests_run_or_parse():
    """Shell and Python blocks are fenced as ```bash / ```python (other spellings would escape the tests), and
    every block or command the tests do not run says why."""
    for block in BLOCKS:
        assert block.language, f"{block.where}: give the fence a language (```bash, ```python, ```text...)"
        assert block.language not in REFUSED_SPELLINGS, (
            f"{block.where}: ```{block.language} is not run by the README tests; write ```bash or ```python"
        )
        reasons = [block.not_run] if block.language == PYTHON else [command.not_run for command in block.commands]
        for reason in reasons:
            assert reason is None or len(reason.split()) >= 3, f"{block.where}: a marker must say why ({reason!r})"


@pytest.fixture(scope="session")
def readme_shared(assets, tmp_path_factory) -> Path:
    """Tiny stand-ins of ``../shared`` beside the working folders the session's temporary folders live in."""
    return write_shared_stand_ins(tmp_path_factory.getbasetemp() / "shared", bert=assets.bert, image_tower=assets.vit,
                                  data_root=assets.data_root)


def test_readme_blocks(demo_run, readme_shared, monkeypatch, capsys):
    """Run the blocks in order (the first ``st-oblique demo`` is the session's ``demo_run``, in the same working
    folder), parse what is marked, then check that git would ignore everything they created."""
    demo_output, demo_result = demo_run
    assert demo_result.code == 0, demo_result.err
    workdir = demo_output.parent  # the README's relative paths (st-oblique-demo, runs/..., ../shared) resolve here
    assert (workdir.parent / "shared") == readme_shared
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MODEL", OFFLINE_MODEL)  # what the README tells offline users to set
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    ran, parsed = [], []
    for block in BLOCKS:
        if block.language == PYTHON:
            run_python_block(block, capsys)
            (parsed if block.not_run is not None else ran).append(f"python block at {block.where}")
        elif block.language == SHELL:
            for command in block.commands:
                outcome = run_command(command.argv, command.not_run is not None, block.section, pyproject)
                if outcome:
                    (ran if outcome == "ran" else parsed).append(shlex.join(command.argv))
    assert any(command.startswith("st-oblique eval") for command in ran), ran
    assert any(command.startswith("st-oblique info") for command in ran), ran
    assert any(command.startswith("st-oblique mteb") for command in ran), ran
    assert any("push" in command for command in parsed), parsed
    assert sum(command.startswith("python block") for command in ran) >= 5, ran
    not_ignored = [entry.name for entry in sorted(workdir.iterdir()) if not git_ignores(entry)]
    assert not not_ignored, f"README examples create {not_ignored}, which .gitignore does not cover"


def run_command(argv: list[str], not_run: bool, section: str, pyproject: dict) -> str | None:
    """Run or parse one bash command; ``"ran"``, ``"parsed"`` or None (checked otherwise)."""
    command = shlex.join(argv)
    if argv[0] == "pip":
        _check_install(argv, pyproject)
        return None
    if argv[0] in ("python3", "source"):  # the virtual environment of the install section
        assert not_run and argv in (["python3", "-m", "venv", ".venv"], ["source", ".venv/bin/activate"]), command
        return None
    if argv == ["python", "-m", "build"]:  # the wheel of _check_install; .ci/run builds and installs it
        return None
    if argv[:3] == ["python", "-m", "pytest"]:
        assert argv == ["python", "-m", "pytest"]  # the CI command; this test is part of it
        return None
    arguments = st_oblique_argv(argv)
    if arguments is None and argv[0] == "python":
        assert not_run, f"{section}: mark `{command}` with the reason the tests do not run it"
        check_repository_command(argv)
        return "parsed"
    assert arguments is not None, f"{section}: {command} is neither st-oblique nor a launcher of it"
    if argv[0] != "st-oblique" or not_run:
        if argv[0] != "st-oblique":
            check_launcher(argv)
        check_options(arguments)
        return "parsed"
    if arguments == ["demo"]:
        assert demo_args(arguments) == ["demo", *QUICK_DEMO]  # what the demo_run fixture ran, here
        return "ran"
    if arguments[0] == "demo":
        arguments = demo_args(arguments)
    elif arguments[0] == "train":
        arguments = [*arguments, *TRAIN_REDUCTION]
    elif arguments[0] == "eval":
        arguments = [*arguments, *EVAL_REDUCTION]
    code = main(arguments)
    assert code == 0, f"{section}: `{command}` failed (exit {code}; the reason is printed above)"
    _check_outputs(arguments)
    return "ran"


PYTHON_CHECKS = {
    'model.save("oblique-minilm")': lambda namespace, out: (  # the quickstart
        "tensor(" in out and namespace["embeddings"].shape == (2, 16 * 32)
        and Path("oblique-minilm/modules.json").is_file()
    ),
    "SentenceTransformerTrainer(": lambda namespace, out: any(
        not trained.equal(saved)
        for trained, saved in zip(namespace["model"].state_dict().values(),
                                  st_oblique.load("oblique-minilm").state_dict().values(), strict=True)
    ),
    "zeroshot_classification(": lambda namespace, out: (
        "acc1" in out and set(namespace["wrapped"].mteb_model_meta.modalities) == {"image", "text"}
    ),
    "ObliqueMatryoshkaLoss(": lambda namespace, out: (
        namespace["short"].shape == (1, 4 * 32) and "sum of 16 token cosines" in out and "effective rank" in out.lower()
    ),
    "semantic_search_usearch(": lambda namespace, out: (
        len(namespace["hits"][0]) == len(namespace["documents"]) and "score=" in out
    ),
    'token_source="class_attention"': lambda namespace, out: (
        namespace["embeddings"].shape == (2, 16 * 32)
        and namespace["fast"][1].token_source == namespace["warm"][1].token_source == "class_attention"
        and namespace["warm"][1].class_attention_width == 384 and namespace["fast"][1].class_attention_width <= 128
    ),
    "st_oblique.export(": lambda namespace, out: (
        (namespace["model"][0].backend, namespace["model"][0].variant) == ("onnx", "qint8")  # the folder's default
        and (namespace["exact"][0].backend, namespace["exact"][0].variant) == ("onnx", "fp32")
        and namespace["embeddings"].shape == (1, 4 * 32)
        and Path("lit-onnx/onnx/model_text_qint8.onnx").is_file()
    ),
}
"""What a python block that contains the key must have done, beyond running (the README's promises)."""


def run_python_block(block, capsys) -> None:
    """Run one python block on its own (a fresh namespace), or compile it when it is marked."""
    compiled = compile(block.code, f"<{block.where}>", "exec")
    if block.not_run is not None:
        return
    capsys.readouterr()
    namespace: dict = {"__name__": "__main__"}
    exec(compiled, namespace)
    out = capsys.readouterr().out
    for key, check in PYTHON_CHECKS.items():
        if key in block.code:
            assert check(namespace, out), f"{block.where}: the block ran but did not do what it promises ({key})"


def git_ignores(entry: Path) -> bool:
    """Whether git ignores a file or folder of this name at the root of the checkout."""
    name = entry.name + ("/" if entry.is_dir() else "")
    done = subprocess.run(["git", "check-ignore", "--no-index", "-q", name], cwd=REPO_ROOT, timeout=60)
    return done.returncode == 0


def _check_install(argv: list[str], pyproject: dict) -> None:
    """A README ``pip install`` installs this checkout or one of its extras (``.[dev]``, ``.[app]``...), ``build``, the
    wheel ``python -m build`` writes, or PyTorch's CPU wheels from PyTorch's index; never a bare ``st-oblique`` (not
    on the package index yet: it would fail, or install another package)."""
    assert argv[1] == "install", shlex.join(argv)
    wheel = f"dist/st_oblique-{st_oblique.__version__}-py3-none-any.whl"
    extras = pyproject["project"]["optional-dependencies"]
    if "--index-url" in argv:
        assert argv[argv.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu", shlex.join(argv)
        assert set(argv[2:argv.index("--index-url")]) <= {"torch", "torchvision"}, shlex.join(argv)
        return
    targets = [arg for arg in argv[2:] if arg != "-e"]  # -e: editable, from the checkout
    assert targets and all(not arg.startswith("-") for arg in targets), shlex.join(argv)
    for target in targets:
        extra = re.fullmatch(r"\.\[([\w-]+)\]", target)
        assert target in {".", "build", wheel} or (extra and extra.group(1) in extras), shlex.join(argv)


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


