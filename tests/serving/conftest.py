"""The ``served`` fixture: an oblique model, a corpus, queries, embeddings and exact reference scores."""

from __future__ import annotations

import pytest
from serving.served import Served, build_served


@pytest.fixture(scope="session")
def served(tiny_bert_dir) -> Served:
    return build_served(tiny_bert_dir)
