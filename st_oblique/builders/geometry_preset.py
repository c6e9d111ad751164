"""GeometryPreset: a named set of st-oblique options that reproduces another method's geometry (see
:data:`st_oblique.builders.sparo.SPARO`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer
from st_oblique.modules.pooling import ObliquePooling, TokenSource

__all__ = ["GeometryPreset"]


@dataclass(frozen=True)
class GeometryPreset:
    """A named set of st-oblique options that reproduces another method's geometry with st-oblique's pieces.

    The options fall in two groups: the head of the model (:class:`~st_oblique.ObliquePooling`: where the K tokens
    come from, attention heads per token, projections, LayerNorm), set by :meth:`apply` on a built model, and the
    loss (how the K cosines are reduced and the temperature), given by :attr:`loss_options` to any st-oblique loss.

    Attributes:
        name: the method's name.
        citation: its BibTeX entry.
        token_source: ObliquePooling's ``token_source`` for every tower.
        num_attention_heads: attention heads per token of an ``"attention"`` head.
        per_token_projection: one projection per token.
        layer_norm: a LayerNorm in the head before the projection.
        reduction: ``"sum"`` or ``"mean"`` of the K cosines in the loss.
        scale: the loss's (initial) logit scale.
        learnable_scale: learn the scale (log space, like CLIP).
        max_scale: the cap of a learned scale.
    """

    name: str
    citation: str
    token_source: TokenSource
    num_attention_heads: int | None
    per_token_projection: bool
    layer_norm: bool
    reduction: str
    scale: float
    learnable_scale: bool
    max_scale: float | None

    @property
    def loss_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~st_oblique.ObliqueContrastiveLoss` (and the other st-oblique losses)."""
        return {
            "scale": self.scale,
            "learnable_scale": self.learnable_scale,
            "max_scale": self.max_scale,
            "reduction": self.reduction,
        }

    def apply(self, model: ObliqueSentenceTransformer) -> ObliqueSentenceTransformer:
        """``model`` (from any builder) with a new, untrained head of this preset; the towers are kept as they are.

        Raises:
            ValueError: ``model`` is not input module + ObliquePooling, or its towers prepend or append class tokens
                while the preset reads the tokens by attention (build the model with ``token_source="attention"``,
                ``text_token_source="attention", image_token_source="attention"`` for a dual encoder).
        """
        modules = list(model.children())
        if len(modules) != 2 or not isinstance(modules[1], ObliquePooling):
            raise ValueError(
                f"GeometryPreset {self.name!r} replaces the ObliquePooling of a model built by st-oblique's builders "
                f"(input module + ObliquePooling); this model has {[type(module).__name__ for module in modules]}."
            )
        backbone, pooling = modules
        sources = {name: head.token_source for name, head in pooling.heads.items()}
        if self.token_source == "attention" and set(sources.values()) != {"attention"}:
            raise ValueError(
                f"{self.name} reads K slots by attention over the towers' tokens, but this model's heads read {sources} "
                "(its towers carry K class tokens). Build it with token_source='attention' (oblique_text_model) or "
                "text_token_source='attention', image_token_source='attention' (oblique_dual_encoder)."
            )
        in_features = pooling.in_features
        head = ObliquePooling(
            in_features,
            num_tokens=pooling.num_tokens,
            token_dim=pooling.token_dim,
            token_source=pooling.token_source if self.token_source is None else self.token_source,
            per_token_projection=self.per_token_projection,
            layer_norm=self.layer_norm,
            num_attention_heads=self.num_attention_heads,
        )
        rebuilt = ObliqueSentenceTransformer(
            modules=[backbone, head], device=str(model.device), similarity_fn_name=model.similarity_fn_name
        )
        rebuilt.model_card_data.base_model = model.model_card_data.base_model
        return rebuilt
