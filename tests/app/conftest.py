"""Fixtures of the search app's tests: tiny saved oblique models (image-text and text-only), folders of images, and a
few dozen real Flickr8k-1k photos with their captions (from ``../shared``)."""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path, PurePosixPath

import pytest
import torch
from app.search_app_helpers import NUM_TOKENS, TOKEN_DIM
from tiny_models import tiny_images, tiny_timm

import st_oblique

FLICKR_PHOTOS = 36


@pytest.fixture(scope="session")
def tiny_lit_dir(tmp_path_factory, tiny_bert_dir) -> str:
    """A saved tiny LiT-style dual encoder (2-layer BERT + timm's test EfficientNet at 64 px, attention pooling:
    one attention map per image token), K=4, d=8, random weights."""
    root = tmp_path_factory.mktemp("tiny_lit")
    cnn = tiny_timm(root / "cnn", architecture="test_efficientnet", image_size=64)
    torch.manual_seed(0)
    model = st_oblique.oblique_dual_encoder(
        tiny_bert_dir, cnn, num_tokens=NUM_TOKENS, token_dim=TOKEN_DIM, device="cpu"
    )
    model.save(str(root / "model"))
    return str(root / "model")


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory, tiny_bert_dir) -> str:
    """A saved tiny text-only oblique model (no image tower), K=4, d=8."""
    torch.manual_seed(0)
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=NUM_TOKENS, token_dim=TOKEN_DIM)
    path = tmp_path_factory.mktemp("tiny_text") / "model"
    model.save(str(path))
    return str(path)


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Six random images (JPEG and PNG, one in a subfolder) in ``photos/``."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for index, image in enumerate(tiny_images(6, size=(40, 48))):
        target = folder / "sub" / f"p{index}.png" if index == 5 else folder / f"p{index}.jpg"
        image.save(target)
    return folder


@pytest.fixture(scope="session")
def flickr_sample(shared, tmp_path_factory) -> tuple[Path, Path]:
    """``(photos folder, captions.tsv)``: the first Flickr8k-1k photos of the caption table, extracted from the
    shared tar, and their captions, in the table's layout (image, caption_idx, caption)."""
    source = shared / "data" / "flickr8k_1k"
    root = tmp_path_factory.mktemp("flickr_sample")
    with open(source / "captions.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    names = list(dict.fromkeys(row["image"] for row in rows))[:FLICKR_PHOTOS]
    photos = root / "photos"
    photos.mkdir()
    with tarfile.open(source / "flickr8k_1k_images_256.tar") as archive:
        members = {PurePosixPath(member.name).name: member for member in archive.getmembers() if member.isfile()}
        for name in names:
            (photos / name).write_bytes(archive.extractfile(members[name]).read())
    table = root / "captions.tsv"
    lines = (source / "captions.tsv").read_text(encoding="utf-8").splitlines()
    kept = set(names)
    table.write_text("\n".join([lines[0], *(line for line in lines[1:] if line.split("\t")[0] in kept)]) + "\n")
    return photos, table
