"""Per-token contributions, token-collapse diagnostics and per-token attention maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import SENTENCES, tiny_images, tiny_timm

import st_oblique
from st_oblique import manifold
from st_oblique.diagnostics.explanations import (
    attention_figure,
    attention_grid,
    attention_image,
    explain_pair,
    token_attention_maps,
)
from st_oblique.diagnostics.token_collapse import collapse_diagnostics, effective_rank, token_collapse

K, D = 4, 8


def test_per_token_similarity_sums_to_model_similarity(tiny_bert_dir):
    torch.manual_seed(0)
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D)
    embeddings = model.encode(SENTENCES, convert_to_tensor=True)
    contributions = manifold.per_token_similarity(embeddings[:3], embeddings, K)
    assert contributions.shape == (3, len(SENTENCES), K)
    torch.testing.assert_close(contributions.sum(-1), model.similarity(embeddings[:3], embeddings), atol=1e-5, rtol=0)
    # float64 reference from the token view
    a = manifold.to_tokens(embeddings[:3].double(), K)
    b = manifold.to_tokens(embeddings.double(), K)
    reference = torch.stack([(a[:, None, k] * b[None, :, k]).sum(-1) for k in range(K)], dim=-1)
    torch.testing.assert_close(contributions.double(), reference, atol=1e-6, rtol=0)
    explanation = explain_pair(model, SENTENCES[0], SENTENCES[1])
    assert len(explanation.contributions) == K
    assert sum(explanation.contributions) == pytest.approx(explanation.similarity, abs=1e-5)
    assert "token" in explanation.to_text()


def test_collapsed_model_gives_cosine_one_and_rank_one(tiny_bert_dir):
    """A collapsed model: every token the same mean state ("split") through K copies of one projection."""
    torch.manual_seed(0)
    collapsed = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D, token_source="split")
    projection = collapsed[-1].heads["default"].projection  # (K, in, d)
    with torch.no_grad():
        projection.copy_(projection[:1].expand_as(projection))
    stats = collapse_diagnostics(collapsed, SENTENCES)
    assert stats.mean_pairwise_cosine == pytest.approx(1.0, abs=1e-6)
    assert stats.max_pairwise_cosine == pytest.approx(1.0, abs=1e-6)
    assert stats.effective_rank == pytest.approx(1.0, abs=1e-4)
    assert stats.num_inputs == len(SENTENCES) and stats.num_tokens == K

    torch.manual_seed(0)
    diverse = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D)
    stats = collapse_diagnostics(diverse, SENTENCES)
    assert stats.mean_pairwise_cosine < 0.9 and stats.effective_rank > 1.5
    assert "collapsed" in stats.to_text() and "pairwise_cosine" not in stats.to_dict()


def test_collapse_statistics_against_constructed_tokens():
    # orthogonal tokens: cosine 0, effective rank K
    eye = torch.eye(D)[:K]
    stats = token_collapse(manifold.to_flat(eye.expand(3, K, D)), K)
    assert stats.mean_pairwise_cosine == pytest.approx(0.0, abs=1e-12)
    assert stats.effective_rank == pytest.approx(K, abs=1e-9)
    assert stats.dataset_effective_rank == pytest.approx(K, abs=1e-9)
    # two copies of one token and two of another, orthogonal: cosine (2 pairs of 1 among 6) = 1/3, rank 2
    tokens = torch.stack([eye[0], eye[0], eye[1], eye[1]])
    stats = token_collapse(manifold.to_flat(tokens[None]), K)
    assert stats.mean_pairwise_cosine == pytest.approx(1 / 3)
    assert stats.effective_rank == pytest.approx(2.0)
    assert float(effective_rank(torch.ones(3, 5))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="K >= 2"):
        token_collapse(torch.ones(2, 4) / 2, 1)
    with pytest.raises(ValueError, match="not on the oblique manifold"):
        token_collapse(torch.ones(2, K * D), K)


@pytest.fixture(scope="module")
def lit_model(tiny_bert_dir, tmp_path_factory):
    cnn_dir = tiny_timm(tmp_path_factory.mktemp("cnn"), architecture="test_efficientnet", image_size=64)
    torch.manual_seed(0)
    return st_oblique.oblique_dual_encoder(tiny_bert_dir, cnn_dir, num_tokens=K, token_dim=D, device="cpu")


def test_attention_maps_one_panel_per_token_each_summing_to_one(lit_model, tmp_path):
    image = tiny_images(1, size=(64, 64))[0]
    maps = token_attention_maps(lit_model, image)
    assert maps is not None and maps.shape[0] == K and maps.ndim == 3
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(K), atol=1e-5, rtol=0)
    assert (maps >= 0).all()
    # the maps are the pooler's weights: re-weighting the token states with them gives the head's attention output
    explanation = explain_pair(lit_model, image, SENTENCES[0])
    figure = attention_figure(image, maps, explanation.contributions, title=SENTENCES[0])
    panels = [axis for axis in figure.axes if axis.images]
    assert len(panels) == K
    assert [axis.get_title() for axis in panels] == [
        f"token {k}: cos {value:+.3f}" for k, value in enumerate(explanation.contributions)
    ]
    # one colour bar on one scale for every panel, and the score the cosines add up to in the title
    (bar,) = [axis for axis in figure.axes if not axis.images and axis.get_visible() and axis.get_ylabel()]
    assert bar.get_ylabel() == "share of the token's attention on each position"
    assert {image.get_clim() for axis in panels for image in axis.images[1:]} == {(0.0, float(maps.max()))}
    assert f"= {sum(explanation.contributions):+.3f}" in figure.get_suptitle() and SENTENCES[0] in figure.get_suptitle()
    assert min(axis.title.get_fontsize() for axis in panels) >= 10
    assert figure.canvas.get_default_filetype() == "png"  # an Agg canvas of its own
    # a chosen subset, in the given order (the search app draws the top tokens): each panel is its own token's map
    top = explanation.ranking[:2]
    figure = attention_figure(image, maps, explanation.contributions, tokens=top)
    panels = [axis for axis in figure.axes if axis.images]
    assert [axis.get_title() for axis in panels] == [f"token {k}: cos {explanation.contributions[k]:+.3f}" for k in top]
    for axis, k in zip(panels, top, strict=True):
        np.testing.assert_array_equal(axis.images[1].get_array(), maps[k].numpy())
    with pytest.raises(ValueError, match="indices of the 4 maps"):
        attention_figure(image, maps, tokens=[K])
    rendered = attention_image(image, maps, explanation.contributions, tokens=top, columns=2)
    assert rendered.mode == "P" and rendered.width > 100
    # no attention pooling in a text-only class-token model: no maps
    assert attention_grid(12, torch.zeros(1, 3, 30, 40)) == (3, 4)
    assert attention_grid(49) == (7, 7)


def test_attention_figure_leaves_the_users_matplotlib_alone(lit_model, tmp_path):
    """A library never switches the user's backend nor adds figures to pyplot's list."""
    import matplotlib
    import matplotlib.pyplot as plt

    from st_oblique.diagnostics.explanations import save_attention_figure

    image = tiny_images(1, size=(64, 64))[0]
    maps = token_attention_maps(lit_model, image)
    original = matplotlib.get_backend()
    matplotlib.use("svg")  # a backend of the user's that is not Agg
    try:
        figures = plt.get_fignums()
        attention_figure(image, maps)
        save_attention_figure(image, maps, tmp_path / "explain.png")
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == figures
    finally:
        matplotlib.use(original)
    assert (tmp_path / "explain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
