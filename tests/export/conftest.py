"""Fixtures of the export tests: tiny models of every tower family, exported once per session (tracing costs seconds
per graph)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from export.export_models import FAMILIES, LONG_BERT_POSITIONS
from tiny_models import tiny_bert, tiny_clip_uneven, tiny_open_clip, tiny_timm

import st_oblique


@pytest.fixture(scope="session")
def long_bert_dir(tmp_path_factory) -> str:
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert_256"), max_position_embeddings=LONG_BERT_POSITIONS)


@pytest.fixture(scope="session")
def family_dirs(long_bert_dir, tmp_path_factory) -> dict[str, str]:
    return {
        "bert": long_bert_dir,
        "clip": tiny_clip_uneven(tmp_path_factory.mktemp("tiny_clip_uneven")),
        "open_clip": tiny_open_clip(tmp_path_factory.mktemp("open_clip_configs"), name="st-oblique-export-tiny-clip"),
        "timm_vit": tiny_timm(tmp_path_factory.mktemp("tiny_timm_vit"), "test_vit", image_size=32),
        "timm_cnn": tiny_timm(tmp_path_factory.mktemp("tiny_timm_cnn"), "test_efficientnet", image_size=64),
    }


@pytest.fixture(scope="session")
def family_model(family_dirs) -> Callable[[str], st_oblique.ObliqueSentenceTransformer]:
    """``family_model(name)``: the tiny oblique model of a family of :data:`FAMILIES` (built once per session)."""
    built: dict[str, st_oblique.ObliqueSentenceTransformer] = {}

    def get(name: str) -> st_oblique.ObliqueSentenceTransformer:
        if name not in built:
            torch.manual_seed(0)
            built[name] = FAMILIES[name](family_dirs).eval()
        return built[name]

    return get


@pytest.fixture(scope="session")
def exported_family(family_model, tmp_path_factory) -> Callable[[str], Path]:
    """``exported_family(name)``: the family's model exported to ONNX and OpenVINO, float32 (once per session)."""
    folders: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in folders:
            folder = tmp_path_factory.mktemp("exported") / name
            st_oblique.export(family_model(name), folder, format=["onnx", "openvino"])
            folders[name] = folder
        return folders[name]

    return get
