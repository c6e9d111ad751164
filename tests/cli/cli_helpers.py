"""Constants and helpers of the ``st-oblique`` command tests (fixtures are in ``conftest.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from st_oblique.app.cli import main

K, D = 4, 8
TINY = ["--num-tokens", str(K), "--token-dim", str(D), "--batch-size", "4", "--no-progress"]
"""Options every tiny training run shares."""
QUICK_DEMO = ["--quick", "--no-progress"]
"""What the tests add to a README ``st-oblique demo`` command: few steps, no progress bars."""


class CliResult(NamedTuple):
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("st-oblique")]


class Assets(NamedTuple):
    bert: str
    clip: str
    vit: str
    open_clip_config: Path  # a custom open_clip architecture (tiny CLIP) as a JSON file
    pairs: Path  # text pairs TSV
    captions: Path  # caption table naming the images in images_tar
    images_tar: Path
    images_folder: Path
    broken_tar: Path  # the same images, one of them not an image file
    hf_dataset: Path  # Dataset.save_to_disk folder: image + caption columns
    data_root: Path  # tiny imagenette, flickr8k_1k, fashion_mnist, MTEB files


def run_main(*args) -> int:
    return main([str(arg) for arg in args])


def demo_args(arguments: list[str]) -> list[str]:
    """A README ``st-oblique demo`` command's arguments as the tests run them (:data:`QUICK_DEMO` added)."""
    return [*arguments, *QUICK_DEMO]


def partial_folders(parent: Path) -> list[Path]:
    """Staging folders left next to an output folder (there must be none)."""
    return [path for path in parent.iterdir() if ".partial-" in path.name or ".previous-" in path.name]
