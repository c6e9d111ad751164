"""Converted clip-mtob checkpoints against the paper's official code (random weights, both variants).

The same per-token-normalized embeddings as the official ``encode_text`` / ``encode_image`` (≤ 1e-5) on tricky
strings and real photos, the same scores as its ``forward``, and the same token ids as its ``BertTokenizerWarper``.
Every comparison prints its largest absolute difference (``pytest -s``).
"""

from __future__ import annotations

import pytest
import torch
from clip_mtob.oracle import TOLERANCE, TRICKY_TEXTS, VARIANTS, max_diff, official_embeddings

import st_oblique

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def loaded(converted) -> dict[str, st_oblique.ObliqueSentenceTransformer]:
    return {variant: st_oblique.load(str(path), device="cpu") for variant, path in converted.items()}


def oblique(model, inputs) -> torch.Tensor:
    num_tokens, token_dim = VARIANTS["mtob" if model.get_embedding_dimension() == 128 else "ref"]
    embeddings = model.encode(inputs, convert_to_tensor=True, batch_size=4)
    return embeddings.reshape(len(inputs), num_tokens, token_dim)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_text_embeddings_match_official_encode_text(variant, loaded, official, official_models):
    expected = official_embeddings(official_models[variant], official, texts=TRICKY_TEXTS)
    assert max_diff(f"{variant} text", oblique(loaded[variant], TRICKY_TEXTS), expected) <= TOLERANCE


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_text_embeddings_do_not_depend_on_the_batch(variant, loaded, official, official_models):
    """Short texts alone (padded to their own length, not to 77 + K − 1 as the official code pads)."""
    texts = ["a dog", "Ångström"]
    expected = official_embeddings(official_models[variant], official, texts=texts)
    assert max_diff(f"{variant} short texts", oblique(loaded[variant], texts), expected) <= TOLERANCE


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_image_embeddings_match_official_encode_image(variant, loaded, official, official_models, photos):
    expected = official_embeddings(official_models[variant], official, images=photos)
    assert max_diff(f"{variant} image", oblique(loaded[variant], photos), expected) <= TOLERANCE


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_scores_match_official_forward(variant, loaded, official, official_models, photos):
    """``model.similarity`` (dot of the flat embeddings) is the official ``forward``'s logits (sums of cosines)."""
    texts = TRICKY_TEXTS[:4]
    ids, mask = official.token_ids(texts)
    transform = official.transform
    with torch.no_grad():
        logits_per_image, _ = official_models[variant](
            torch.stack([transform(image) for image in photos[:3]]), (ids, mask)
        )
    model = loaded[variant]
    assert model.similarity_fn_name == "dot"
    scores = model.similarity(
        model.encode(photos[:3], convert_to_tensor=True), model.encode(texts, convert_to_tensor=True)
    )
    assert max_diff(f"{variant} scores", scores, logits_per_image) <= TOLERANCE * VARIANTS[variant][0]


def test_token_ids_match_official_tokenizer(loaded, official):
    """The text route's input ids: the official ids (``[CLS] … [SEP]``, 75 tokens at most) with 15 more ``[CLS]``."""
    model = loaded["mtob"]
    features = model.preprocess(TRICKY_TEXTS)
    ids, mask = official.token_ids(TRICKY_TEXTS)
    extra = VARIANTS["mtob"][0] - 1
    for row, text in enumerate(TRICKY_TEXTS):
        length = int(mask[row].sum())
        expected = [int(ids[row, 0])] * extra + ids[row, :length].tolist()
        got = features["input_ids"][row][features["attention_mask"][row].bool()].tolist()
        assert got == expected, f"{text!r}: {got[:25]} != {expected[:25]}"
    assert features["input_ids"].shape[1] == max(int(mask[row].sum()) for row in range(len(TRICKY_TEXTS))) + extra


def test_known_tokenizer_difference_is_only_the_greek_final_sigma(loaded, official):
    """The one difference found: Python's ``str.lower`` (official) turns a word-final Σ into ς, the Rust tokenizer
    into σ. Documented in the README; this test fails if it disappears or spreads to other Greek text."""
    model = loaded["mtob"]
    ids, mask = official.token_ids(["σίσυφος", "ΟΔΟΣ"])
    features = model.preprocess(["σίσυφος", "ΟΔΟΣ"])
    rows = [features["input_ids"][row][features["attention_mask"][row].bool()].tolist()[15:] for row in range(2)]
    assert rows[0] == ids[0, : int(mask[0].sum())].tolist()
    assert rows[1] != ids[1, : int(mask[1].sum())].tolist()
