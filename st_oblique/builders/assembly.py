"""Putting an oblique model together: a backbone module and its :class:`~st_oblique.ObliquePooling` in an
:class:`~st_oblique.ObliqueSentenceTransformer`, the heads started from a CLIP model's projections."""

from __future__ import annotations

import logging

import torch
from sentence_transformers.base.modules import Module
from torch import Tensor

from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer
from st_oblique.modules.pooling import ObliquePooling

__all__ = ["init_heads_from_projections", "oblique_model"]

logger = logging.getLogger(__name__)


def oblique_model(
    input_module: Module, pooling: ObliquePooling, *, device: str | None, base_model: str | list[str] | None
) -> ObliqueSentenceTransformer:
    """The model ``input_module -> pooling`` scoring by ``"dot"`` (the sum of the K cosines), its card naming
    ``base_model`` (the backbone's id, or both towers' ids; None for a backbone with random weights)."""
    model = ObliqueSentenceTransformer(modules=[input_module, pooling], device=device, similarity_fn_name="dot")
    if base_model is not None:
        model.model_card_data.base_model = base_model
    return model


@torch.no_grad()
def init_heads_from_projections(pooling: ObliquePooling, projections: dict[str, Tensor]) -> None:
    """Start the heads of ``pooling`` from a CLIP model's projections.

    Token k of a modality's head gets columns ``[b*d, (b+1)*d)`` of that modality's projection, with
    ``b = k mod (P / d)``, so the K tokens start as the K consecutive pieces of the CLIP embedding.

    Args:
        pooling: a per-modality :class:`ObliquePooling`.
        projections: ``{modality: (in_features, P)}`` matrices (CLIP's projections, transposed to input-major).
            A modality whose width or P does not fit (P not a multiple of d) keeps its random head, with a log
            message.
    """
    for modality, matrix in projections.items():
        head = pooling.heads[modality]
        weight = head.projection
        in_features, token_dim = weight.shape[-2:]
        width = matrix.shape[-1]
        if matrix.shape[0] != in_features or width % token_dim:
            logger.info(
                f"The {modality} projection {tuple(matrix.shape)} does not fit heads of shape {tuple(weight.shape)} "
                "(its width must be a multiple of token_dim); the head keeps its random initialisation."
            )
            continue
        blocks = matrix.detach().to(weight.dtype).reshape(in_features, width // token_dim, token_dim)
        if weight.ndim == 3:
            weight.copy_(blocks.permute(1, 0, 2)[torch.arange(weight.shape[0]) % blocks.shape[1]])
        else:
            weight.copy_(blocks[:, 0])
