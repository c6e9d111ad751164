from __future__ import annotations

import logging

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize

from st_oblique import manifold
from st_oblique.modules.pooling import ObliquePooling, masked_mean, select_first, select_last

BATCH, LENGTH, WIDTH = 3, 10, 12


def position_coded_tokens() -> torch.Tensor:
    """(B, L, W) token states whose first channel is the position, so selections can be read back."""
    tokens = torch.randn(BATCH, LENGTH, WIDTH)
    tokens[..., 0] = torch.arange(LENGTH, dtype=torch.float)
    return tokens


def right_padded_mask(lengths: list[int]) -> torch.Tensor:
    return (torch.arange(LENGTH)[None] < torch.tensor(lengths)[:, None]).long()


@pytest.mark.parametrize(
    ("source", "per_token_projection"),
    [(source, shared) for source in ("first", "last", "attention", "split") for shared in (True, False)][:-1],
)
def test_every_source_gives_unit_tokens_of_the_right_shape(source, per_token_projection):
    pooling = ObliquePooling(WIDTH, num_tokens=4, token_dim=6, token_source=source, per_token_projection=per_token_projection)
    features = {"token_embeddings": torch.randn(BATCH, LENGTH, WIDTH), "attention_mask": right_padded_mask([10, 8, 6])}
    out = pooling(features)
    assert out["oblique_embeddings"].shape == (BATCH, 4, 6)
    assert out["sentence_embedding"].shape == (BATCH, 24)
    assert torch.equal(out["sentence_embedding"], out["oblique_embeddings"].flatten(1))
    assert manifold.is_on_manifold(out["sentence_embedding"], num_tokens=4, atol=1e-5)
    assert pooling.get_embedding_dimension() == 24


def test_defaults_follow_the_paper():
    pooling = ObliquePooling(WIDTH)
    assert (pooling.num_tokens, pooling.token_dim, pooling.token_source) == (16, 32, "first")
    assert pooling.get_embedding_dimension() == 512


def test_first_selects_the_first_positions_and_refuses_padding():
    tokens = position_coded_tokens()
    assert select_first(tokens, right_padded_mask([10, 9, 4]), 4)[..., 0].tolist() == [[0, 1, 2, 3]] * BATCH
    with pytest.raises(ValueError, match="padding"):
        select_first(tokens, right_padded_mask([10, 9, 3]), 4)
    with pytest.raises(ValueError, match="at least num_tokens"):
        select_first(tokens[:, :3], None, 4)


def test_last_selects_positions_ending_at_the_last_real_token():
    tokens = position_coded_tokens()
    selected = select_last(tokens, right_padded_mask([10, 7, 4]), 3)
    assert selected[..., 0].tolist() == [[7, 8, 9], [4, 5, 6], [1, 2, 3]]
    left_padded = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]] * BATCH)
    assert select_last(tokens, left_padded, 2)[..., 0].tolist() == [[8, 9]] * BATCH
    assert select_last(tokens, None, 2)[..., 0].tolist() == [[8, 9]] * BATCH
    with pytest.raises(ValueError, match="shorter"):
        select_last(tokens, right_padded_mask([10, 7, 2]), 3)
    with pytest.raises(ValueError, match="without any non-padding"):
        select_last(tokens, right_padded_mask([10, 7, 0]), 3)


@pytest.mark.parametrize("source", ["attention", "split"])
def test_padding_values_never_influence_attention_or_split(source):
    torch.manual_seed(0)
    pooling = ObliquePooling(WIDTH, num_tokens=4, token_dim=6, token_source=source).eval()
    mask = right_padded_mask([10, 6, 3])
    tokens = torch.randn(BATCH, LENGTH, WIDTH)
    scrambled = tokens.clone()
    scrambled[mask == 0] = torch.randn(int((mask == 0).sum()), WIDTH) * 100
    first = pooling({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    second = pooling({"token_embeddings": scrambled, "attention_mask": mask})["sentence_embedding"]
    torch.testing.assert_close(first, second, atol=1e-6, rtol=0)
    # ...while the real tokens do influence the output
    changed = tokens.clone()
    changed[0, 0] += 5 * torch.randn(WIDTH)  # not a constant shift, which LayerNorm would remove
    third = pooling({"token_embeddings": changed, "attention_mask": mask})["sentence_embedding"]
    assert not torch.allclose(first[0], third[0])


def test_masked_mean_ignores_padding():
    tokens = torch.randn(BATCH, LENGTH, WIDTH)
    mask = right_padded_mask([10, 5, 1])
    expected = torch.stack([tokens[i, :n].mean(0) for i, n in enumerate([10, 5, 1])])
    torch.testing.assert_close(masked_mean(tokens, mask), expected)


def test_split_uses_the_pooled_vector_when_there_are_no_token_states():
    pooling = ObliquePooling(WIDTH, num_tokens=4, token_dim=6, token_source="split")
    out = pooling({"sentence_embedding": torch.randn(BATCH, WIDTH)})
    assert out["sentence_embedding"].shape == (BATCH, 24)
    with pytest.raises(ValueError, match="token_embeddings"):
        ObliquePooling(WIDTH, num_tokens=4, token_dim=6, token_source="first")({"sentence_embedding": torch.randn(2, WIDTH)})


def test_per_modality_heads_route_by_modality():
    pooling = ObliquePooling({"text": 8, "image": 12}, num_tokens=2, token_dim=4, token_source={"text": "last", "image": "first"})
    text = pooling({"token_embeddings": torch.randn(2, 5, 8), "attention_mask": torch.ones(2, 5), "modality": "text"})
    image = pooling({"token_embeddings": torch.randn(2, 7, 12), "modality": "image"})
    assert text["sentence_embedding"].shape == image["sentence_embedding"].shape == (2, 8)
    assert pooling.modalities == ["text", "image"]
    with pytest.raises(ValueError, match="audio"):
        pooling({"token_embeddings": torch.randn(2, 5, 8), "modality": "audio"})
    with pytest.raises(ValueError, match="width 12 but the backbone gives width 8"):
        pooling({"token_embeddings": torch.randn(2, 5, 8), "modality": "image"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_tokens": 0}, "num_tokens"),
        ({"token_dim": 2.5}, "token_dim"),
        ({"token_source": "middle"}, "token_source"),
        ({"token_source": "split", "per_token_projection": False}, "identical"),
        ({"in_features": {}}, "empty"),
        ({"in_features": {"text": 8}, "token_source": {"image": "first"}}, "same modalities"),
        ({"token_source": "attention", "num_attention_heads": 5}, "divide"),
    ],
)
def test_bad_configs_are_rejected(kwargs, message):
    kwargs = {"in_features": WIDTH, **kwargs}
    with pytest.raises(ValueError, match=message):
        ObliquePooling(**kwargs)


def test_attention_heads_default_divides_the_width():
    assert ObliquePooling(12, token_source="attention").num_attention_heads == 4
    assert ObliquePooling(32, token_source="attention").num_attention_heads == 8
    assert ObliquePooling(12, token_source="first").num_attention_heads is None


def test_model_defaults_to_dot_and_warns_about_a_trailing_normalize(tiny_bert_dir, caplog):
    from sentence_transformers.sentence_transformer.modules import Transformer

    backbone = Transformer(tiny_bert_dir)
    pooling = ObliquePooling(32, num_tokens=4, token_dim=8, token_source="attention")
    assert SentenceTransformer(modules=[backbone, pooling]).similarity_fn_name == "dot"
    with caplog.at_level(logging.WARNING):
        model = SentenceTransformer(modules=[backbone, pooling, Normalize()])
    assert "Normalize module follows ObliquePooling" in caplog.text
    embedding = model.encode(["a man plays the guitar"], convert_to_tensor=True)
    torch.testing.assert_close(manifold.token_norms(embedding, 4), torch.full((1, 4), 0.5))  # 1/sqrt(K)
