from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from tiny_models import SENTENCES

import st_oblique


class SavedModel(NamedTuple):
    model: st_oblique.ObliqueSentenceTransformer
    path: object  # pathlib.Path of the saved folder
    embeddings: torch.Tensor  # of SENTENCES


@pytest.fixture(scope="session")
def saved_text_model(tiny_bert_dir, tmp_path_factory) -> SavedModel:
    """A tiny oblique text model (K=4, d=8) saved to a folder; tests must not modify either."""
    torch.manual_seed(0)
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=4, token_dim=8)
    path = tmp_path_factory.mktemp("saved_text") / "model"
    model.save(str(path))
    return SavedModel(model, path, model.encode(SENTENCES, convert_to_tensor=True))

