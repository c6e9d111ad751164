"""TokenLayerNorm: a LayerNorm over every token state, as its own Sentence Transformers module."""

from __future__ import annotations

from typing import Any

from sentence_transformers.base.modules import Module
from torch import nn

from st_oblique.modules.serialization import SafetensorsModule
from st_oblique.validators import check_positive_int

__all__ = ["TokenLayerNorm"]


class TokenLayerNorm(SafetensorsModule, Module):
    """A tower's final LayerNorm applied to every token state (``features["token_embeddings"]``).

    For towers whose last LayerNorm is not part of the Hugging Face backbone: the text tower of the paper's
    official clip-mtob code is a post-LN transformer encoder (a BERT-shaped ``BertModel``) followed by a separate
    ``ln_final``. Put it after the backbone in the tower's route, before
    :class:`~st_oblique.ObliquePooling` (``layer_norm=False`` there, since the tower now ends in its LayerNorm).

    Inputs/outputs: ``token_embeddings`` ``(B, L, H)`` -> ``(B, L, H)``; the other features pass through.

    Args:
        in_features: H, the width of the token states.
        eps: the LayerNorm's epsilon (torch's default 1e-5, as in CLIP and clip-mtob).

    Example::

        from sentence_transformers import SentenceTransformer
        from st_oblique import ObliquePooling
        from st_oblique.modules import ClassTokenTransformer
        from st_oblique.modules.token_layer_norm import TokenLayerNorm

        backbone = ClassTokenTransformer("bert-base-uncased", num_class_tokens=16)
        model = SentenceTransformer(modules=[backbone, TokenLayerNorm(768),
                                             ObliquePooling(768, num_tokens=16, token_dim=32, layer_norm=False)],
                                    similarity_fn_name="dot")
    """

    config_keys: list[str] = ["in_features", "eps"]
    required_config_keys = ("in_features",)

    def __init__(self, in_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        check_positive_int(in_features, name="in_features")
        self.in_features = in_features
        self.eps = float(eps)
        self.norm = nn.LayerNorm(in_features, eps=self.eps)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Replaces ``token_embeddings`` ``(B, L, H)`` by their LayerNorm."""
        tokens = features.get("token_embeddings")
        if tokens is None:
            raise ValueError(
                f"TokenLayerNorm needs 'token_embeddings' from the module before it; the features only have {sorted(features)}."
            )
        if tokens.shape[-1] != self.in_features:
            raise ValueError(
                f"TokenLayerNorm was built for token states of width {self.in_features}, but the module before it "
                f"gives width {tokens.shape[-1]}; build it with in_features={tokens.shape[-1]}."
            )
        features["token_embeddings"] = self.norm(tokens.to(self.norm.weight.dtype))
        return features

    def get_embedding_dimension(self) -> int:
        return self.in_features
