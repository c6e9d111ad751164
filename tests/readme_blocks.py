"""The code blocks of README.md, in order, as the README tests run them (one mechanism for every block).

- Fences: ```` ```bash ```` holds shell commands, run in order in one working folder; ```` ```python ```` holds a
  program, run on its own (a fresh namespace: its imports included) in that folder after the blocks above it. Other
  fence languages (``text``, ``yaml``, ``json``, ...) are data, not run. Other spellings of shell or Python
  (``sh``, ``shell``, ``console``, ``py``) are refused: the tests would not run them.
- Markers: a comment line ``# online: <reason>``, ``# serves <until when>`` (a server such as ``st-oblique app``) or
  ``# not run by the README tests: <reason>`` marks what the tests only parse (every option checked, Python
  compiled): in a bash block the commands after it, to the end of the block; in a python block the whole block (the
  marker is its first line). Every marker gives its reason.
- Local paths: the README names this project's offline data and weights as ``../shared/...`` and a Hub model
  through the environment variable ``MODEL`` (its default the Hub id; ``MODEL=../shared/weights/all-MiniLM-L6-v2``
  offline, as the README says). The tests run in a working folder whose ``../shared`` holds tiny stand-ins of the
  same layout (:func:`write_shared_stand_ins`) with ``MODEL`` set that way, so every block runs as written.

A block another README section adds is covered by this alone: bash commands of ``st-oblique``, ``python -m``
(repository modules) and the launchers run or parse as above; a python block runs.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"

SHELL, PYTHON = "bash", "python"
REFUSED_SPELLINGS = {"sh", "shell", "console", "zsh", "py", "python3", "pycon"}
MARKER = re.compile(r"^#\s*(online|serves|not run by the README tests)\b\s*:?\s*(.*)$", re.IGNORECASE)
OFFLINE_MODEL = "../shared/weights/all-MiniLM-L6-v2"
"""What the README tells offline users to set ``MODEL`` to."""


@dataclass
class Command:
    argv: list[str]
    line: int
    not_run: str | None  # the marker's reason, or None: runs


@dataclass
class Block:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    section: str
    not_run: str | None = None  # python: the first-line marker's reason
    commands: list[Command] = field(default_factory=list)  # bash

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.section})"


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced code block of the README, in order (see the module docstring)."""
    text = README.read_text(encoding="utf-8") if text is None else text
    blocks: list[Block] = []
    section = ""
    lines = text.splitlines()
    position = 0
    while position < len(lines):
        line = lines[position]
        if line.startswith("#"):
            section = line.lstrip("# ").strip()
        fence = re.match(r"^```(\S*)\s*$", line)
        if fence:
            end = next(index for index in range(position + 1, len(lines)) if lines[index].startswith("```"))
            blocks.append(_block(fence.group(1).lower(), lines[position + 1:end], position + 1, section))
            position = end
        position += 1
    return blocks


def _block(language: str, body: list[str], line: int, section: str) -> Block:
    code = "\n".join(body) + "\n"
    block = Block(language, code, line, section)
    if language == PYTHON:
        first = body[0].strip() if body else ""
        marker = MARKER.match(first)
        block.not_run = (marker.group(2) or "") if marker else None
    elif language == SHELL:
        not_run = None
        joined = code.replace("\\\n", " ")
        offset = 0
        for text_line in joined.splitlines():
            offset += 1
            stripped = text_line.strip()
            marker = MARKER.match(stripped)
            if marker:
                not_run = marker.group(2) or ""
                continue
            if stripped.startswith("#"):
                continue
            argv = shlex.split(stripped, comments=True)
            if argv:
                block.commands.append(Command(argv, line + offset, not_run))
    return block


def write_shared_stand_ins(shared: Path, *, bert: str, image_tower: str, data_root: Path) -> Path:
    """``shared`` laid out like ``../shared`` with tiny stand-ins: ``weights/all-MiniLM-L6-v2`` (a tiny BERT),
    ``weights/tf_efficientnet_lite0`` (a tiny image tower), ``data/`` (tiny evaluation sets in the real formats,
    with ``flickr8k_1k/captions.tsv`` and its image tar)."""
    if shared.exists():
        return shared
    (shared / "weights").mkdir(parents=True)
    shutil.copytree(bert, shared / "weights" / "all-MiniLM-L6-v2")
    shutil.copytree(image_tower, shared / "weights" / "tf_efficientnet_lite0")
    shutil.copytree(data_root, shared / "data")
    (shared / "README.md").write_text("Tiny stand-ins of ../shared for the README tests.\n", encoding="utf-8")
    return shared
