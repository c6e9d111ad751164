"""InfoNCE over embeddings kept in blocks, row chunk by row chunk, with its closed-form gradient.

GradCache's loss step (Gao et al. 2021) needs the loss of the whole batch and its gradient with respect to every
cached embedding, without ever holding the ``(B, B)`` score matrix. Autograd through row chunks gets there, but
each chunk's backward allocates a fresh full-size gradient of every column and keeps the softmax's intermediates,
and the per-mini-batch embeddings must first be concatenated (one more copy of each column). InfoNCE's gradient
has a closed form, so it is written here directly, accumulated in place into one gradient buffer per cached
mini-batch tensor, and the embeddings stay the mini-batch tensors GradCache made.

For a chunk of query rows ``R`` (queries ``Q_R``, ``(R, D)``) against the keys ``K`` (``(n, D)``), with the
logit scale ``s`` and the positive of query ``i`` being key ``i``:

    Z = s * Q_R @ K.T                        # (R, n) logits
    loss_R = sum_i logsumexp(Z_i) - Z_{i,i}
    G = w * (softmax(Z) - onehot(positives))   # d loss / d Z, w the row weight (1 / B, halved when symmetric)
    dQ_R += s * G @ K,   dK += s * G.T @ Q_R,   d loss / d log s += sum(G * Z) = s * sum((G @ K) * Q_R)

The query-to-doc term takes anchors as queries and every candidate column as keys; the doc-to-query term takes the
positives as queries and the anchors as keys (CLIP's symmetric loss). The peak memory of a chunk is one ``(R, n)``
matrix, overwritten in place from logits to probabilities to ``G``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

import torch
from torch import Tensor


class BlockedColumn:
    """One column of a batch (anchors, or candidates) as consecutive row blocks, ``(n_b, D)`` each.

    The blocks are GradCache's mini-batch embeddings (no concatenated copy is made); with ``with_gradient`` each
    block gets a zero gradient buffer of its own shape, which the loss accumulates into.

    Args:
        blocks: the row blocks, in order; all ``(n_b, D)`` with the same ``D``, dtype and device.
        with_gradient: allocate the gradient buffers (``gradients``).
    """

    def __init__(self, blocks: Sequence[Tensor], *, with_gradient: bool) -> None:
        self.blocks = [block.detach() for block in blocks]
        self.starts = [0, *accumulate(len(block) for block in self.blocks)]
        self.gradients = [torch.zeros_like(block) for block in self.blocks] if with_gradient else None

    def __len__(self) -> int:
        return self.starts[-1]

    def _pieces(self, begin: int, end: int) -> list[tuple[int, int, int]]:
        """``(block index, first row in it, last row + 1 in it)`` of the rows ``[begin, end)``."""
        pieces, index = [], bisect_right(self.starts, begin) - 1
        while begin < end:
            block_end = self.starts[index + 1]
            stop = min(end, block_end)
            pieces.append((index, begin - self.starts[index], stop - self.starts[index]))
            begin, index = stop, index + 1
        return pieces

    def rows(self, begin: int, end: int) -> Tensor:
        """Rows ``[begin, end)``, ``(end - begin, D)`` (a view when they lie in one block)."""
        parts = [self.blocks[index][low:high] for index, low, high in self._pieces(begin, end)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def add_to_rows(self, begin: int, end: int, value: Tensor, alpha: float) -> None:
        """``gradient[begin:end] += alpha * value`` (``value``: ``(end - begin, D)``)."""
        offset = 0
        for index, low, high in self._pieces(begin, end):
            self.gradients[index][low:high].add_(value[offset : offset + high - low], alpha=alpha)
            offset += high - low

    def scores(self, queries: Tensor) -> Tensor:
        """``queries @ column.T``, ``(R, n)``, block by block into one buffer."""
        out = queries.new_empty(len(queries), len(self))
        for block, start, stop in zip(self.blocks, self.starts[:-1], self.starts[1:], strict=True):
            out[:, start:stop] = queries @ block.T
        return out

    def weighted_sum(self, weights: Tensor) -> Tensor:
        """``weights @ column``, ``(R, D)``, for ``weights`` of shape ``(R, n)``."""
        total = None
        for block, start, stop in zip(self.blocks, self.starts[:-1], self.starts[1:], strict=True):
            part = weights[:, start:stop] @ block
            total = part if total is None else total.add_(part)
        return total

    def add_outer(self, weights: Tensor, queries: Tensor, alpha: float) -> None:
        """``gradient += alpha * weights.T @ queries`` (``weights``: ``(R, n)``, ``queries``: ``(R, D)``)."""
        for gradient, start, stop in zip(self.gradients, self.starts[:-1], self.starts[1:], strict=True):
            gradient.addmm_(weights[:, start:stop].T, queries, alpha=alpha)


def info_nce_direction(
    queries: BlockedColumn,
    keys: BlockedColumn,
    begin: int,
    end: int,
    scale: float,
    weight: float,
    *,
    with_gradient: bool,
) -> tuple[Tensor, Tensor | None]:
    """One direction of InfoNCE for the query rows ``[begin, end)``, whose positives are the keys of the same index.

    Args:
        queries: the query column (anchors for query-to-doc, positives for doc-to-query).
        keys: the key column (every candidate, or the anchors); key ``i`` is the positive of query ``i``.
        begin, end: the chunk of query rows.
        scale: the logit scale ``s`` (the multiplier on the flat dot product).
        weight: ``w``, the weight of each row's term in the loss.
        with_gradient: accumulate ``d loss / d queries`` and ``d loss / d keys`` into their gradient buffers.

    Returns:
        ``w * sum_i (logsumexp(Z_i) - Z_ii)`` over the chunk and its derivative with respect to ``log s`` (None
        without gradient), 0-d tensors (no device synchronization per chunk).
    """
    query_rows = queries.rows(begin, end)  # (R, D)
    logits = keys.scores(scale * query_rows)  # (R, n)
    diagonal = (torch.arange(end - begin, device=logits.device), torch.arange(begin, end, device=logits.device))
    positive = logits[diagonal]  # (R,), a copy
    peak = logits.amax(dim=1, keepdim=True)
    total = logits.sub_(peak).exp_().sum(dim=1, keepdim=True)  # logits now hold exp(Z - max)
    loss = weight * (peak.squeeze(1) + total.log().squeeze(1) - positive).sum()
    if not with_gradient:
        return loss, None
    gradient = logits.div_(total)  # softmax(Z)
    gradient[diagonal] -= 1.0
    gradient.mul_(weight)  # G = d loss / d Z
    to_queries = keys.weighted_sum(gradient)  # G @ K, (R, D)
    scale_gradient = scale * (to_queries * query_rows).sum()
    keys.add_outer(gradient, query_rows, alpha=scale)
    queries.add_to_rows(begin, end, to_queries, alpha=scale)
    return loss, scale_gradient
