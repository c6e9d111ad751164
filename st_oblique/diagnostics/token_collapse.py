"""Token-collapse diagnostics: did the K tokens of an oblique model become copies of one another?

A model with K unit tokens per input is only worth its K*d numbers when the tokens differ. Two measures, both on
embeddings ``(N, K*d)`` of a dataset:

- **mean pairwise cosine** between the K tokens of each input (the mean of the off-diagonal entries of its K x K
  Gram matrix), averaged over the inputs: 1 when the tokens are copies (collapse), about 0 for unrelated tokens;
- **effective rank** of each input's ``(K, d)`` token matrix (Roy & Vetterli 2007: ``exp`` of the entropy of its
  normalized singular values), averaged over the inputs: 1 for copies, ``min(K, d)`` for orthogonal tokens;
  and the effective rank of all ``N*K`` tokens of the dataset stacked (how many directions the tokens use).

Example::

    from st_oblique.diagnostics.token_collapse import collapse_diagnostics, token_collapse

    stats = token_collapse(model.encode(texts, convert_to_tensor=True), num_tokens=16)
    stats.mean_pairwise_cosine, stats.effective_rank      # e.g. 0.12, 11.3; collapsed: 1.0, 1.0
    collapse_diagnostics(model, texts)                    # the same from a model and its inputs, as a dict
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from st_oblique import manifold
from st_oblique.modules.shape import oblique_shape

__all__ = ["TokenCollapse", "collapse_diagnostics", "effective_rank", "token_collapse"]


@dataclass(frozen=True)
class TokenCollapse:
    """Collapse statistics of the K tokens over a set of inputs (see the module docstring).

    Attributes:
        num_inputs: N.
        num_tokens: K.
        mean_pairwise_cosine: mean over inputs of the mean cosine between two different tokens of an input.
        max_pairwise_cosine: the largest mean cosine of one pair of token positions (k, l), over the inputs.
        effective_rank: mean over inputs of the effective rank of the input's ``(K, d)`` tokens, in ``[1, min(K, d)]``.
        dataset_effective_rank: effective rank of the ``(N*K, d)`` stack of every token of every input.
        pairwise_cosine: ``K x K`` mean Gram matrix over the inputs (1 on the diagonal).
    """

    num_inputs: int
    num_tokens: int
    mean_pairwise_cosine: float
    max_pairwise_cosine: float
    effective_rank: float
    dataset_effective_rank: float
    pairwise_cosine: list[list[float]]

    def to_dict(self, with_matrix: bool = False) -> dict[str, Any]:
        values = asdict(self)
        if not with_matrix:
            values.pop("pairwise_cosine")
        return values

    def to_text(self) -> str:
        return (
            f"mean cosine between two of the K={self.num_tokens} tokens of an input {self.mean_pairwise_cosine:.3f} "
            f"(most similar pair of positions {self.max_pairwise_cosine:.3f}; 1 = collapsed), effective rank "
            f"{self.effective_rank:.2f} per input (1 = collapsed, {self.num_tokens} = orthogonal tokens), "
            f"{self.dataset_effective_rank:.2f} over the {self.num_inputs} inputs"
        )


def effective_rank(matrix: Tensor) -> Tensor:
    """Effective rank (Roy & Vetterli 2007) of ``(..., m, n)`` matrices: ``exp(-sum p log p)`` with ``p`` the
    singular values divided by their sum; 1 for rank one, ``min(m, n)`` for equal singular values."""
    singular = torch.linalg.svdvals(matrix.double())
    p = singular / singular.sum(-1, keepdim=True).clamp_min(1e-300)
    entropy = -(p * p.clamp_min(1e-300).log()).sum(-1)
    return entropy.exp()


def token_collapse(embeddings: Tensor, num_tokens: int) -> TokenCollapse:
    """Collapse statistics of oblique embeddings ``(N, K*d)`` (see :class:`TokenCollapse`).

    Raises:
        ValueError: not ``(N, K*d)`` embeddings on the manifold, or K=1 (one token cannot collapse).
    """
    if num_tokens < 2:
        raise ValueError("Token collapse needs K >= 2 tokens per input; this model has K=1.")
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"Expected (N, K*d) embeddings with N >= 1, got shape {tuple(embeddings.shape)}.")
    manifold.assert_on_manifold(embeddings, num_tokens, name="embedding given to token_collapse")
    tokens = manifold.to_tokens(embeddings.detach().double(), num_tokens)  # (N, K, d)
    gram = tokens @ tokens.transpose(-1, -2)  # (N, K, K)
    off_diagonal = ~torch.eye(num_tokens, dtype=torch.bool)
    mean_gram = gram.mean(0)
    per_input_ranks = effective_rank(tokens)
    return TokenCollapse(
        num_inputs=int(tokens.shape[0]),
        num_tokens=num_tokens,
        mean_pairwise_cosine=float(gram[:, off_diagonal].mean()),
        max_pairwise_cosine=float(mean_gram[off_diagonal].max()),
        effective_rank=float(per_input_ranks.mean()),
        dataset_effective_rank=float(effective_rank(tokens.reshape(-1, tokens.shape[-1]))),
        pairwise_cosine=[[round(float(value), 6) for value in row] for row in mean_gram],
    )


def collapse_diagnostics(
    model: nn.Module, inputs: Sequence[Any], batch_size: int = 32, truncate_dim: int | None = None
) -> TokenCollapse:
    """:func:`token_collapse` of ``model.encode(inputs)`` (texts, images, or anything the model encodes).

    Args:
        model: an oblique SentenceTransformer.
        inputs: the dataset (a few hundred inputs are plenty).
        batch_size: encoding batch size.
        truncate_dim: diagnose the first ``truncate_dim // d`` tokens only.
    """
    shape = oblique_shape(model, required_by="collapse_diagnostics")
    keep = shape.kept_tokens(truncate_dim)
    embeddings = model.encode(list(inputs), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    return token_collapse(manifold.truncate(embeddings.cpu(), keep, shape.num_tokens), keep)
