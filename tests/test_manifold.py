from __future__ import annotations

import math

import pytest
import torch

from st_oblique import manifold
from st_oblique.validators import kept_tokens


def reference_unit(tokens: torch.Tensor) -> torch.Tensor:
    """Per-token normalization in float64, written out by hand."""
    t = tokens.double()
    return t / torch.sqrt((t * t).sum(-1, keepdim=True))


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(5, 16, 32, generator=generator), torch.randn(7, 16, 32, generator=generator)


def test_project_matches_float64_reference(batch):
    a, _ = batch
    projected = manifold.project(a)
    torch.testing.assert_close(projected.double(), reference_unit(a), atol=1e-6, rtol=0)
    assert manifold.is_on_manifold(projected)


def test_project_flat_equals_project_tokens(batch):
    a, _ = batch
    flat = manifold.project(a.flatten(1), num_tokens=16)
    assert flat.shape == (5, 512)
    torch.testing.assert_close(flat, manifold.project(a).flatten(1))


def test_project_zero_token_is_safe():
    tokens = torch.zeros(2, 3, 4, requires_grad=True)
    projected = manifold.project(tokens)
    projected.sum().backward()
    assert torch.isfinite(projected).all() and torch.isfinite(tokens.grad).all()
    assert not manifold.is_on_manifold(projected)


def test_flat_token_views_roundtrip(batch):
    a, _ = batch
    flat = manifold.to_flat(a)
    assert flat.shape == (5, 512)
    assert torch.equal(manifold.to_tokens(flat, 16), a)
    with pytest.raises(ValueError, match="not a multiple"):
        manifold.to_tokens(torch.zeros(2, 30), 16)
    with pytest.raises(ValueError, match="positive whole number"):
        manifold.to_tokens(flat, 0)


def test_similarity_identity_flat_dot_sum_cos_and_k_cos(batch):
    a, b = batch
    ua, ub = manifold.project(a), manifold.project(b)
    num_tokens = a.shape[1]
    sum_of_cosines = torch.einsum("ikd,jkd->ij", reference_unit(a), reference_unit(b))  # float64 reference
    flat_dot = manifold.to_flat(ua) @ manifold.to_flat(ub).T
    flat_cos = torch.nn.functional.cosine_similarity(
        manifold.to_flat(ua)[:, None].double(), manifold.to_flat(ub)[None].double(), dim=-1
    )
    torch.testing.assert_close(flat_dot.double(), sum_of_cosines, atol=1e-5, rtol=0)
    torch.testing.assert_close(manifold.similarity(ua, ub).double(), sum_of_cosines, atol=1e-5, rtol=0)
    torch.testing.assert_close(num_tokens * flat_cos, sum_of_cosines, atol=1e-5, rtol=0)
    assert sum_of_cosines.abs().max() <= num_tokens


def test_pairwise_similarity_is_the_diagonal(batch):
    a, _ = batch
    u, v = manifold.project(a), manifold.project(torch.randn_like(a))
    torch.testing.assert_close(manifold.pairwise_similarity(u, v), manifold.similarity(u, v).diagonal())
    with pytest.raises(ValueError, match="same"):
        manifold.similarity(u, torch.randn(3, 8, 32))


def test_token_mean_matches_float64_reference(batch):
    a, _ = batch  # 5 "templates" of one class
    mean = manifold.token_mean(a, dim=0)
    reference = reference_unit(reference_unit(a).mean(0))
    torch.testing.assert_close(mean.double(), reference, atol=1e-6, rtol=0)
    assert manifold.is_on_manifold(mean)
    flat = manifold.token_mean(a.flatten(1), dim=0, num_tokens=16)
    torch.testing.assert_close(flat, mean.flatten())
    with pytest.raises(ValueError, match="token axis"):
        manifold.token_mean(a, dim=-1)


def test_token_mean_with_one_token_is_clip_ensembling(batch):
    a, _ = batch
    single = a[:, :1]  # K = 1: (templates, 1, d)
    clip_style = torch.nn.functional.normalize(torch.nn.functional.normalize(single[:, 0], dim=-1).mean(0), dim=-1)
    torch.testing.assert_close(manifold.token_mean(single, dim=0)[0], clip_style)


def test_global_normalization_breaks_the_manifold_but_token_mean_does_not(batch):
    a, _ = batch
    flat = manifold.project(a).flatten(1)
    naive = torch.nn.functional.normalize(flat.mean(0), dim=-1) * math.sqrt(16)
    assert not manifold.is_on_manifold(naive, num_tokens=16)
    assert manifold.is_on_manifold(manifold.token_mean(flat, dim=0, num_tokens=16), num_tokens=16)


def test_truncate_stays_on_smaller_manifold(batch):
    a, _ = batch
    flat = manifold.to_flat(manifold.project(a))
    kept = manifold.truncate(flat, 4, num_tokens=16)
    assert kept.shape == (5, 128)
    assert torch.equal(kept, flat[:, :128])
    assert manifold.is_on_manifold(kept, num_tokens=4)
    with pytest.raises(ValueError, match="between 1 and K"):
        manifold.truncate(flat, 17, num_tokens=16)


def test_is_on_manifold_rejects_wrong_inputs(batch):
    a, _ = batch
    flat = manifold.to_flat(manifold.project(a))
    assert manifold.is_on_manifold(flat, num_tokens=16)
    assert not manifold.is_on_manifold(flat, num_tokens=15)  # 512 is not a multiple of 15
    assert not manifold.is_on_manifold(flat / 2, num_tokens=16)
    bad = flat.clone()
    bad[0, 0] = float("nan")
    assert not manifold.is_on_manifold(bad, num_tokens=16)


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (lambda x: x / 4.0, "1/sqrt"),  # a trailing Normalize on K=16
        (lambda x: torch.nn.functional.normalize(x * torch.linspace(0.5, 2, 512), dim=-1), "globally"),
        (lambda x: x * 3, "norms range"),
        (lambda x: x.index_fill(1, torch.tensor([0]), float("inf")), "NaN or inf"),
    ],
)
def test_assert_on_manifold_explains_the_cause(batch, transform, message):
    a, _ = batch
    flat = manifold.to_flat(manifold.project(a))
    manifold.assert_on_manifold(flat, num_tokens=16)
    with pytest.raises(ValueError, match=message):
        manifold.assert_on_manifold(transform(flat), num_tokens=16)


def test_kept_tokens_is_truncate_on_the_flat_view():
    tokens = manifold.project(torch.randn(3, 4, 8, dtype=torch.float64))
    flat = manifold.to_flat(tokens)
    for truncate_dim, keep in ((None, 4), (8, 1), (24, 3), (32, 4), (100, 4)):
        assert kept_tokens(truncate_dim, num_tokens=4, token_dim=8) == keep
        cut = flat if truncate_dim is None else flat[..., :truncate_dim]
        torch.testing.assert_close(cut, manifold.truncate(flat, keep, num_tokens=4), rtol=0, atol=0)
    for bad in (12, 0, -8):
        with pytest.raises(ValueError, match="multiple of 8"):
            kept_tokens(bad, num_tokens=4, token_dim=8)
