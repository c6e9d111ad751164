"""Fixtures of the reliability suite: tiny models and data built once per session (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from reliability.reliability_helpers import D, K
from tiny_models import SENTENCES, tiny_clip, tiny_oblique_clip, tiny_open_clip

import st_oblique


class Saved(NamedTuple):
    path: Path
    embeddings: torch.Tensor


@pytest.fixture(scope="session")
def saved_model(tiny_bert_dir, tmp_path_factory) -> Saved:
    """A tiny oblique text model (K=4, d=8) saved once; tests copy it before damaging it."""
    torch.manual_seed(0)
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D)
    path = tmp_path_factory.mktemp("reliability_model") / "model"
    model.save(str(path))
    return Saved(path, model.encode(SENTENCES, convert_to_tensor=True))


@pytest.fixture(scope="session")
def image_models(tmp_path_factory) -> dict:
    """A tiny HF CLIP through ST's Transformer and a tiny open_clip model, both oblique (K=4, d=8)."""
    root = tmp_path_factory.mktemp("reliability_image_models")
    return {
        "hf_clip": tiny_oblique_clip(tiny_clip(root / "clip")),
        "open_clip": st_oblique.oblique_open_clip(tiny_open_clip(root), None, num_tokens=K, token_dim=D),
    }


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reliability_data") / "pairs.tsv"
    rows = [f"{a}\t{b}" for a, b in zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1], strict=True)]
    path.write_text("anchor\tpositive\n" + "\n".join(rows) + "\n")
    return path
