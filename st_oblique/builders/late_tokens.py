"""Late class tokens in the builders: the ``class_attention_*`` options of a model's ObliquePooling for its towers,
and the heads' initialisation from the towers' last layers (``token_source="class_attention"``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from st_oblique.modules.late_class_tokens import class_attention_options, initialize_class_attention
from st_oblique.modules.pooling import ObliquePooling
from st_oblique.modules.tower_layers import TowerLayers, tower_layers

__all__ = ["LateClassTokens", "check_late_source", "late_class_tokens"]


@dataclass(frozen=True)
class LateClassTokens:
    """The ``class_attention_*`` options of ObliquePooling for a backbone's towers, and their initialisation.

    Attributes:
        towers: ``{head name: the tower's layers (None: nothing to copy)}`` of the class-attention heads.
        options: ObliquePooling's ``class_attention_*`` keyword arguments (empty without class-attention heads).
    """

    towers: dict[str, TowerLayers | None]
    options: dict[str, Any]

    def initialize(self, pooling: ObliquePooling) -> None:
        """Start ``pooling``'s class-attention heads from their towers (what fits)."""
        if self.towers:
            initialize_class_attention(pooling, self.towers)

    def pooling(self, in_features: int | dict[str, int], **options: Any) -> ObliquePooling:
        """The backbone's ObliquePooling (``options``: its other arguments) with these class-attention options, its
        class-attention heads started from their towers."""
        pooling = ObliquePooling(in_features, **options, **self.options)
        self.initialize(pooling)
        return pooling


def late_class_tokens(
    sources: dict[str, tuple[nn.Module, str, Any]],
    widths: dict[str, int],
    *,
    layers: int,
    width: int | dict[str, int] | None,
    heads: int | None,
    mlp_ratio: float | None,
) -> LateClassTokens:
    """The late class tokens of the heads in ``sources``: ``{head name: (tower model, modality, tokenizer or
    None)}`` (empty: no class-attention head); ``widths``: the towers' token widths by head name."""
    if not sources:
        return LateClassTokens({}, {})
    towers = {
        name: tower_layers(model, modality, first_token_id=getattr(tokenizer, "cls_token_id", None))
        for name, (model, modality, tokenizer) in sources.items()
    }
    options = class_attention_options(towers, widths, layers=layers, width=width, heads=heads, mlp_ratio=mlp_ratio)
    return LateClassTokens(towers, options)


def check_late_source(builder: str, token_source: str | None) -> bool:
    """Whether a CLIP-like builder gets late class tokens (``token_source="class_attention"``).

    Raises:
        ValueError: any other source than None (K class tokens inside both towers) or ``"class_attention"``.
    """
    if token_source not in (None, "class_attention"):
        raise ValueError(
            f"{builder} takes token_source=None (K class tokens inside both towers) or 'class_attention' (K class "
            f"tokens that join after the unchanged towers), got {token_source!r}."
        )
    return token_source == "class_attention"
