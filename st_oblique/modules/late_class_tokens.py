"""Late class tokens on a built backbone: the ObliquePooling options that fit its towers, and their initialisation.

The builders (:func:`st_oblique.oblique_text_model`, :func:`~st_oblique.oblique_clip`,
:func:`~st_oblique.oblique_open_clip`, :func:`~st_oblique.oblique_dual_encoder`) build ``token_source="class_attention"``
heads in two steps:

1. :func:`class_attention_options`: ObliquePooling's ``class_attention_*`` keyword arguments for the towers: the
   towers' block style (post-norm for BERT-like encoders, pre-norm for CLIP and ViTs, their activation), and, at the
   tower's own width, its heads and MLP ratio, so that its last layers fit the blocks;
2. :func:`initialize_class_attention`: copy what fits (see
   :meth:`~st_oblique.modules.class_attention.ClassAttention.initialize_from_tower`).

Example::

    towers = {"default": tower_layers(backbone.model, "text", first_token_id=backbone.tokenizer.cls_token_id)}
    pooling = ObliquePooling(384, num_tokens=16, token_source="class_attention",
                             **class_attention_options(towers, {"default": 384}, width=384))
    initialize_class_attention(pooling, towers)   # blocks = MiniLM's last 2 layers
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from st_oblique.modules.class_attention import BlockStyle, default_width
from st_oblique.modules.pooling import ObliquePooling
from st_oblique.modules.tower_layers import TowerLayers

logger = logging.getLogger(__name__)


def class_attention_options(
    towers: Mapping[str, TowerLayers | None],
    widths: Mapping[str, int],
    *,
    layers: int = 2,
    width: int | Mapping[str, int] | None = None,
    heads: int | None = None,
    mlp_ratio: float | None = None,
) -> dict[str, Any]:
    """ObliquePooling's ``class_attention_*`` keyword arguments for the class-attention heads named in ``towers``.

    Args:
        towers: ``{head name: the tower's layers or None}`` (None: an unknown family or a CNN; CaiT's defaults).
        widths: ``{head name: width of the tower's token states}``.
        layers: class-attention blocks per head.
        width: the blocks' width, one for every head or ``{head name: width}``; None:
            :data:`~st_oblique.modules.class_attention.DEFAULT_WIDTH` capped at the tower's width. Pass the tower's
            width to start the blocks from its last layers.
        heads: attention heads; None: the tower's own at its width, else the module's default.
        mlp_ratio: MLP width over width; None: the tower's own at its width, else 4.

    Returns:
        ``{"class_attention_layers": ..., "class_attention_width": {head: ...}, "class_attention_heads": {...},
        "class_attention_mlp_ratio": {...}, "class_attention_style": {head: {...}}}``.
    """
    options: dict[str, dict[str, Any]] = {"width": {}, "heads": {}, "mlp_ratio": {}, "style": {}}
    for name, tower in towers.items():
        given = width.get(name) if isinstance(width, Mapping) else width
        chosen = default_width(widths[name]) if given is None else given
        full = tower is not None and chosen == tower.width
        options["width"][name] = chosen
        options["heads"][name] = tower.num_heads if heads is None and full else heads
        if mlp_ratio is not None:
            options["mlp_ratio"][name] = mlp_ratio
        else:
            options["mlp_ratio"][name] = tower.hidden_width / tower.width if full else 4.0
        options["style"][name] = (tower.style if tower is not None else BlockStyle()).to_config()
    return {"class_attention_layers": layers, **{f"class_attention_{key}": value for key, value in options.items()}}


def initialize_class_attention(pooling: ObliquePooling, towers: Mapping[str, TowerLayers | None]) -> dict[str, str]:
    """Start every class-attention head of ``pooling`` from its tower (what fits); returns ``{head: what was done}``
    and logs it."""
    done = {}
    for name, tower in towers.items():
        head = pooling.heads[name]
        if head.token_source != "class_attention":
            continue
        done[name] = head.class_attention.initialize_from_tower(tower)
        family = "" if tower is None else f" ({tower.family})"
        logger.info(f"Class-attention head {name!r}{family}: {done[name]}.")
    return done
