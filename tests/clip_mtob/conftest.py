"""Fixtures of the clip-mtob tests: the official code, small official models, their checkpoints, the converted
folders and real photos (see :mod:`clip_mtob.oracle`)."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from clip_mtob.oracle import VARIANTS, Official, build_official
from PIL import Image
from torch import nn

from st_oblique.converters import convert_clip_mtob


@pytest.fixture(scope="session")
def official(shared) -> Official:
    root = shared / "reference" / "clip-mtob"
    if not (root / "run_example.py").exists():
        pytest.skip(f"the paper's official code is not at {root} (see ../shared/README.md)")
    # run_example imports its siblings by name and builds its tokenizer from the relative path ERNIE-BASE-EN-2.0
    # when it is imported, so it is imported from inside its folder.
    sys.path.insert(0, str(root))
    cwd = os.getcwd()
    try:
        os.chdir(root)
        with contextlib.redirect_stdout(io.StringIO()):  # its "[INFO] Use BERT/ERNIE tokenizer." line
            run_example = importlib.import_module("run_example")
    finally:
        os.chdir(cwd)
        sys.path.remove(str(root))
    return Official(root=root, run_example=run_example)


@pytest.fixture(scope="session")
def official_models(official) -> dict[str, nn.Module]:
    return {variant: build_official(official, variant) for variant in VARIANTS}


@pytest.fixture(scope="session")
def checkpoints(official_models, tmp_path_factory) -> dict[str, Path]:
    """Each official model's ``state_dict`` saved with ``torch.save``, as the release files are."""
    folder = tmp_path_factory.mktemp("clip_mtob_checkpoints")
    paths = {}
    for variant, model in official_models.items():
        paths[variant] = folder / f"{variant}.pt"
        torch.save(model.state_dict(), paths[variant])
    return paths


@pytest.fixture(scope="session")
def converted(official, checkpoints, tmp_path_factory) -> dict[str, Path]:
    """The checkpoints converted and saved (``convert_clip_mtob(..., output)``)."""
    folder = tmp_path_factory.mktemp("clip_mtob_converted")
    paths = {}
    for variant, checkpoint in checkpoints.items():
        paths[variant] = folder / variant
        convert_clip_mtob(checkpoint, official.vocab, paths[variant])
    return paths


@pytest.fixture(scope="session")
def photos(shared, official) -> list[Image.Image]:
    """The official sample photo and six Flickr8k photos (one with an odd crop margin: 456 x 256 -> 399 x 224)."""
    images = [Image.open(official.root / "Cat03.jpeg")]
    with tarfile.open(shared / "data" / "flickr8k_1k" / "flickr8k_1k_images_256.tar") as archive:
        members = [member for member in archive.getmembers() if member.isfile()][:6]
        for member in members:
            images.append(Image.open(io.BytesIO(archive.extractfile(member).read())))
    for image in images:
        image.load()
    return images
