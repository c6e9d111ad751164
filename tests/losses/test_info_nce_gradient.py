"""The closed-form InfoNCE gradient over row blocks equals autograd through the full (B, B) loss, in float64."""

from __future__ import annotations

import pytest
import torch

from st_oblique import manifold
from st_oblique.losses.info_nce_gradient import BlockedColumn, info_nce_direction


def split(tensor: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    assert sum(sizes) == len(tensor)
    return [part.clone() for part in tensor.split(sizes)]


def reference(anchors, candidates, log_scale, symmetric: bool):
    """CLIP's loss written independently: cross-entropy over the full logit matrices, mean over the rows."""
    scale = log_scale.exp()
    logits = scale * anchors @ candidates.T  # (N, M*N)
    targets = torch.arange(len(anchors))
    loss = torch.nn.functional.cross_entropy(logits, targets)
    if symmetric:
        reverse = scale * candidates[: len(anchors)] @ anchors.T
        loss = (loss + torch.nn.functional.cross_entropy(reverse, targets)) / 2
    return loss


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(
    ("anchor_blocks", "candidate_blocks", "chunk"),
    [
        ([10], [10], 10),  # one block, one chunk
        ([3, 3, 4], [5, 5], 4),  # blocks that do not line up with each other or with the chunks
        ([4, 6], [2, 8, 7, 3], 3),  # one hard-negative column: 20 candidates
    ],
)
def test_loss_and_gradients_equal_autograd(symmetric, anchor_blocks, candidate_blocks, chunk):
    generator = torch.Generator().manual_seed(0)
    num_tokens, token_dim = 4, 8
    batch = sum(anchor_blocks)
    anchors = manifold.project(torch.randn(batch, num_tokens * token_dim, generator=generator, dtype=torch.float64), num_tokens=num_tokens)
    candidates = manifold.project(
        torch.randn(sum(candidate_blocks), num_tokens * token_dim, generator=generator, dtype=torch.float64),
        num_tokens=num_tokens,
    )
    log_scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    leaves = [anchors.clone().requires_grad_(), candidates.clone().requires_grad_()]
    expected = reference(*leaves, log_scale, symmetric)
    expected.backward()

    queries = BlockedColumn(split(anchors, anchor_blocks), with_gradient=True)
    keys = BlockedColumn(split(candidates, candidate_blocks), with_gradient=True)
    scale, weight = float(log_scale.detach().exp()), 1.0 / (batch * (2 if symmetric else 1))
    loss, scale_gradient = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    for begin in range(0, batch, chunk):
        end = min(begin + chunk, batch)
        terms = [info_nce_direction(queries, keys, begin, end, scale, weight, with_gradient=True)]
        if symmetric:
            terms.append(info_nce_direction(keys, queries, begin, end, scale, weight, with_gradient=True))
        for term, term_gradient in terms:
            loss, scale_gradient = loss + term, scale_gradient + term_gradient

    torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.cat(queries.gradients), leaves[0].grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(torch.cat(keys.gradients), leaves[1].grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(scale_gradient, log_scale.grad, rtol=1e-10, atol=1e-14)


def test_without_gradient_only_the_loss_is_computed():
    anchors = manifold.project(torch.randn(6, 8, dtype=torch.float64), num_tokens=2)
    queries = BlockedColumn([anchors[:2], anchors[2:]], with_gradient=False)
    keys = BlockedColumn([anchors.flip(0)], with_gradient=False)
    loss, scale_gradient = info_nce_direction(queries, keys, 0, 6, 2.0, 1 / 6, with_gradient=False)
    expected = torch.nn.functional.cross_entropy(2.0 * anchors @ anchors.flip(0).T, torch.arange(6))
    torch.testing.assert_close(loss, expected)
    assert scale_gradient is None and queries.gradients is None


def test_rows_span_blocks_and_add_to_rows_lands_in_the_right_block():
    column = BlockedColumn([torch.zeros(2, 3), torch.ones(3, 3), torch.full((1, 3), 2.0)], with_gradient=True)
    assert len(column) == 6
    torch.testing.assert_close(column.rows(1, 6)[:, 0], torch.tensor([0.0, 1, 1, 1, 2]))
    assert column.rows(2, 4).data_ptr() == column.blocks[1].data_ptr()  # inside one block: a view, not a copy
    column.add_to_rows(1, 4, torch.arange(9.0).reshape(3, 3), alpha=2.0)
    torch.testing.assert_close(torch.cat(column.gradients)[:, 0], torch.tensor([0.0, 0, 6, 12, 0, 0]))
