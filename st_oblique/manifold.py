"""The oblique manifold OB(d, K) = (S^{d-1})^K: the math every other part of st-oblique builds on.

A point of OB(d, K) is K unit vectors of size d. st-oblique stores it two ways:

- the *token view* ``(..., K, d)``, in which each of the K rows has unit L2 norm, and
- the *flat view* ``(..., K*d)``, the token view with its last two axes merged. This is what
  ``SentenceTransformer.encode`` returns, what MTEB scores and what a vector database indexes.

The oblique similarity of two points is the sum of the K per-token cosines (Sun, arXiv 2209.02127):

    s(u, v) = sum_k <u_k, v_k>        in [-K, K]

Because every token has unit norm, ``s(u, v)`` equals the dot product of the flat views, and the flat
views all have norm sqrt(K), so ``cos(flat u, flat v) == s(u, v) / K``. An oblique model is therefore an
ordinary dense model with ``similarity_fn_name="dot"``.

Every function here is differentiable and works for any leading batch shape.

Example::

    >>> import torch
    >>> from st_oblique import manifold
    >>> tokens = manifold.project(torch.randn(4, 16, 32))        # (B, K, d), each token unit-norm
    >>> flat = manifold.to_flat(tokens)                          # (B, K*d) = (4, 512)
    >>> manifold.is_on_manifold(flat, num_tokens=16)
    True
    >>> scores = manifold.similarity(tokens, tokens)             # (B, B), values in [-16, 16]
    >>> torch.allclose(scores, flat @ flat.T, atol=1e-5)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from st_oblique.validators import check_positive_int, check_token_count

__all__ = [
    "DEFAULT_ATOL",
    "assert_on_manifold",
    "is_on_manifold",
    "pairwise_similarity",
    "per_token_similarity",
    "project",
    "similarity",
    "to_flat",
    "to_tokens",
    "token_mean",
    "token_norms",
    "truncate",
]

DEFAULT_ATOL = 1e-3
"""Default tolerance on per-token norms for :func:`is_on_manifold` (float16/bfloat16 outputs need about 1e-3)."""


def to_tokens(flat: Tensor, num_tokens: int) -> Tensor:
    """Token view of a flat embedding.

    Args:
        flat: ``(..., K*d)``.
        num_tokens: K. Must divide the last dimension.

    Returns:
        ``(..., K, d)``, a view of ``flat`` (no copy when ``flat`` is contiguous).
    """
    check_positive_int(num_tokens, name="num_tokens")
    size = flat.shape[-1]
    if size % num_tokens:
        raise ValueError(
            f"A flat oblique embedding of size {size} cannot hold num_tokens={num_tokens} tokens: "
            f"{size} is not a multiple of {num_tokens}. Check that num_tokens matches the model "
            "(see the ObliquePooling config)."
        )
    return flat.unflatten(-1, (num_tokens, size // num_tokens))


def to_flat(tokens: Tensor) -> Tensor:
    """Flat view of a token embedding: ``(..., K, d)`` -> ``(..., K*d)``."""
    if tokens.ndim < 2:
        raise ValueError(f"Expected a token view of shape (..., K, d), got shape {tuple(tokens.shape)}.")
    return tokens.flatten(-2)


def project(x: Tensor, num_tokens: int | None = None, eps: float = 1e-12) -> Tensor:
    """Project onto OB(d, K): L2-normalize every token.

    A zero token stays zero (no NaN, finite gradient), which leaves it off the manifold;
    :func:`is_on_manifold` reports it.

    Args:
        x: the token view ``(..., K, d)``, or the flat view ``(..., K*d)`` when ``num_tokens`` is given.
        num_tokens: K when ``x`` is flat; the result is then flat too.
        eps: lower bound on the norm in the division.

    Returns:
        A tensor of the same shape as ``x``, each token with unit norm.
    """
    if num_tokens is None:
        return F.normalize(x, p=2, dim=-1, eps=eps)
    return to_flat(F.normalize(to_tokens(x, num_tokens), p=2, dim=-1, eps=eps))


def similarity(a: Tensor, b: Tensor) -> Tensor:
    """All-pairs oblique similarity ``s[i, j] = sum_k <a[i, k], b[j, k]>``.

    Args:
        a: ``(N, K, d)``.
        b: ``(M, K, d)``.

    Returns:
        ``(N, M)``; in ``[-K, K]`` when both inputs are on the manifold.
    """
    _check_pair(a, b)
    return torch.einsum("ikd,jkd->ij", a, b)


def per_token_similarity(a: Tensor, b: Tensor, num_tokens: int | None = None) -> Tensor:
    """All-pairs per-token cosines ``c[i, j, k] = <a[i, k], b[j, k]>``: the K contributions of every score.

    ``c.sum(-1)`` is :func:`similarity` (and ``model.similarity`` of an oblique model): each score decomposes
    exactly into what each token contributes.

    Args:
        a: ``(N, K*d)`` flat with ``num_tokens`` given, or the token view ``(N, K, d)``.
        b: ``(M, K*d)`` or ``(M, K, d)``, like ``a``.
        num_tokens: K when the inputs are flat.

    Returns:
        ``(N, M, K)``.
    """
    if num_tokens is not None:
        a, b = to_tokens(a, num_tokens), to_tokens(b, num_tokens)
    _check_pair(a, b)
    return torch.einsum("ikd,jkd->ijk", a, b)


def pairwise_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Row-by-row oblique similarity ``s[i] = sum_k <a[i, k], b[i, k]>``.

    Args:
        a: ``(..., K, d)``.
        b: same shape as ``a``.

    Returns:
        ``(...)``.
    """
    _check_pair(a, b)
    if a.shape != b.shape:
        raise ValueError(f"pairwise_similarity needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}.")
    return (a * b).sum(dim=(-2, -1))


def token_mean(x: Tensor, dim: int = 0, num_tokens: int | None = None) -> Tensor:
    """Token-wise mean over an ensemble axis, re-projected onto the manifold.

    This is how prompt-template ensembles must be built for oblique models: averaging the flat vectors
    and normalizing them globally (CLIP_benchmark's recipe) leaves tokens of unequal norms, which silently
    re-weights the K terms of the similarity. Averaging each token and normalizing each token keeps the
    result on OB(d, K). For K=1 this is exactly CLIP's ``normalize(mean(normalize(x)))``.

    Args:
        x: token view ``(..., K, d)``, or flat ``(..., K*d)`` with ``num_tokens`` given.
        dim: the ensemble axis (e.g. templates); must not be one of the last two (token) axes.
        num_tokens: K when ``x`` is flat; the result is then flat too.

    Returns:
        ``x`` with ``dim`` reduced, each token of unit norm.
    """
    tokens = x if num_tokens is None else to_tokens(x, num_tokens)
    axis = dim % tokens.ndim
    if axis >= tokens.ndim - 2:
        raise ValueError(f"dim={dim} is a token axis of a tensor of shape {tuple(tokens.shape)}; pick the ensemble axis.")
    mean = project(project(tokens).mean(dim=axis))
    return mean if num_tokens is None else to_flat(mean)


def truncate(x: Tensor, keep_tokens: int, num_tokens: int | None = None) -> Tensor:
    """Keep the first ``keep_tokens`` tokens. A point of OB(d, K) becomes a point of OB(d, keep_tokens).

    On the flat view this is ``x[..., :keep_tokens * d]``, which is why ``truncate_dim`` is safe for
    oblique models exactly when it is a multiple of d (:func:`st_oblique.validators.kept_tokens` turns a
    ``truncate_dim`` into ``keep_tokens``).

    Args:
        x: token view ``(..., K, d)``, or flat ``(..., K*d)`` with ``num_tokens`` given.
        keep_tokens: how many leading tokens to keep, ``1 <= keep_tokens <= K``.
        num_tokens: K when ``x`` is flat; the result is then flat too.
    """
    tokens = x if num_tokens is None else to_tokens(x, num_tokens)
    total = tokens.shape[-2]
    check_token_count(keep_tokens, total, name="keep_tokens")
    kept = tokens[..., :keep_tokens, :]
    return kept if num_tokens is None else to_flat(kept)


def token_norms(x: Tensor, num_tokens: int | None = None) -> Tensor:
    """Per-token L2 norms, ``(..., K)``; all ones on the manifold."""
    tokens = x if num_tokens is None else to_tokens(x, num_tokens)
    return tokens.norm(dim=-1)


def is_on_manifold(x: Tensor, num_tokens: int | None = None, atol: float = DEFAULT_ATOL) -> bool:
    """Whether every token of ``x`` has unit norm (within ``atol``) and ``x`` is finite.

    Args:
        x: token view ``(..., K, d)``, or flat ``(..., K*d)`` with ``num_tokens`` given.
        num_tokens: K when ``x`` is flat.
        atol: tolerance on each token's norm.
    """
    if num_tokens is not None and x.shape[-1] % num_tokens:
        return False
    norms = token_norms(x.detach().float(), num_tokens)
    return bool(torch.isfinite(norms).all() and ((norms - 1).abs() <= atol).all())


def assert_on_manifold(x: Tensor, num_tokens: int | None = None, atol: float = DEFAULT_ATOL, name: str = "embedding") -> None:
    """Raise a ValueError that explains what is wrong when ``x`` is not on OB(d, K).

    Distinguishes the usual causes: NaN/inf, a trailing ``Normalize`` module (all tokens of norm
    1/sqrt(K)), a wrong ``num_tokens``, and unnormalized output.
    """
    if num_tokens is not None and x.shape[-1] % num_tokens:
        raise ValueError(
            f"The {name} has size {x.shape[-1]}, which is not a multiple of num_tokens={num_tokens}: "
            "it does not come from an oblique model with this K."
        )
    detached = x.detach().float()
    if not torch.isfinite(detached).all():
        raise ValueError(
            f"The {name} contains NaN or inf values. Check the inputs, the learning rate and mixed-precision settings."
        )
    norms = token_norms(detached, num_tokens)
    if ((norms - 1).abs() <= atol).all():
        return
    k = norms.shape[-1]
    flat_norms = norms.square().sum(-1).sqrt()
    if k > 1 and ((norms - k**-0.5).abs() <= atol).all():
        cause = (
            f"every token has norm 1/sqrt(K) = {k**-0.5:.4f}, which is what a Normalize module after ObliquePooling "
            "does. Remove it: oblique embeddings are already normalized per token"
        )
    elif ((flat_norms - 1).abs() <= atol).all():
        cause = (
            "the flat vector has unit norm but its tokens do not: the embedding was normalized globally, "
            "not per token (a Normalize module, normalize_embeddings=True, or another pooling)"
        )
    else:
        cause = (
            f"per-token norms range from {norms.min().item():.4f} to {norms.max().item():.4f}; the embedding "
            "was not produced by ObliquePooling, or num_tokens does not match the model"
        )
    raise ValueError(f"The {name} is not on the oblique manifold (K={k} unit tokens): {cause}.")


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.ndim < 2 or b.ndim < 2 or a.shape[-2:] != b.shape[-2:]:
        raise ValueError(
            f"Oblique similarity needs token views with the same (K, d), got shapes {tuple(a.shape)} and {tuple(b.shape)}."
        )
