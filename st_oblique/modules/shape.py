"""The oblique shape of a model: K and d, found in one place, and the whole-token check of ``truncate_dim``.

Every part of st-oblique that needs K and d (the losses, encoding, the evaluation harness, the model card,
``truncate_dim``) asks :func:`oblique_shape`, so a model is recognised as oblique, and refused when its towers
disagree, the same way everywhere.

Example::

    from st_oblique.modules.shape import oblique_shape

    shape = oblique_shape(model)                  # ObliqueShape(num_tokens=16, token_dim=32), or None
    shape.kept_tokens(truncate_dim=128)           # 4: the first 4 whole tokens
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from st_oblique.modules.logit_scale import LogitScale
from st_oblique.modules.pooling import ObliquePooling
from st_oblique.validators import kept_tokens

__all__ = ["ObliqueShape", "check_truncate_dim", "model_temperature", "oblique_poolings", "oblique_shape"]


@dataclass(frozen=True)
class ObliqueShape:
    """K unit tokens of size d: embeddings are ``(N, K*d)`` flat, ``(N, K, d)`` as tokens."""

    num_tokens: int
    token_dim: int

    @property
    def embedding_dimension(self) -> int:
        """K * d."""
        return self.num_tokens * self.token_dim

    def kept_tokens(self, truncate_dim: int | None) -> int:
        """How many whole tokens ``truncate_dim`` keeps (K for None); a ValueError for a cut inside a token."""
        return kept_tokens(truncate_dim, self.num_tokens, self.token_dim)

    def truncations(self) -> list[int]:
        """The whole-token embedding sizes K*d, (K/2)*d, ..., d (halving, as Matryoshka models list them)."""
        sizes, count = [], self.num_tokens
        while count >= 1:
            sizes.append(count * self.token_dim)
            if count == 1:
                break
            count = max(1, count // 2)
        return sizes


def oblique_poolings(model: nn.Module) -> list[ObliquePooling]:
    """Every :class:`~st_oblique.ObliquePooling` in ``model`` (also behind a Router or a DDP wrapper), and the one an
    exported model's graphs contain (``exported_pooling`` of
    :class:`~st_oblique.modules.exported_oblique_encoder.ExportedObliqueEncoder`: its configuration, never run)."""
    poolings = []
    for module in model.modules():
        if isinstance(module, ObliquePooling):
            poolings.append(module)
        exported = getattr(module, "exported_pooling", None)
        if isinstance(exported, ObliquePooling):
            poolings.append(exported)
    return poolings


def oblique_shape(model: nn.Module, *, required_by: str | None = None) -> ObliqueShape | None:
    """K and d of ``model``'s :class:`~st_oblique.ObliquePooling` modules, or None for a model that is not oblique.

    Args:
        model: any ``nn.Module`` (a SentenceTransformer, a wrapped model, a Router...).
        required_by: the name of what needs an oblique model (e.g. ``"ObliqueContrastiveLoss"``); then a model
            without ObliquePooling is a ValueError that says how to build one, instead of None.

    Raises:
        ValueError: the model's ObliquePooling modules disagree on (K, d), or ``required_by`` is given and the
            model has none.
    """
    poolings = oblique_poolings(model)
    if not poolings:
        if required_by is None:
            return None
        raise ValueError(
            f"{required_by} needs an oblique model, but this {type(model).__name__} has no ObliquePooling module "
            f"(modules: {[type(module).__name__ for module in model.children()]}). Build the model with st_oblique "
            "(e.g. st_oblique.oblique_text_model) or add an ObliquePooling after the backbone."
            + (" For a single unit vector per input use MultipleNegativesRankingLoss." if "Loss" in required_by else "")
        )
    shapes = {(pooling.num_tokens, pooling.token_dim) for pooling in poolings}
    if len(shapes) > 1:
        raise ValueError(
            f"The model's ObliquePooling modules disagree on (K, d): {sorted(shapes)}. Oblique similarity needs every "
            "tower to emit the same number of tokens of the same size."
        )
    return ObliqueShape(*shapes.pop())


def model_temperature(model: nn.Module) -> LogitScale:
    """The logit scale (and sigmoid bias) of an oblique ``model``: its first ObliquePooling's ``temperature``.

    Every builder makes one ObliquePooling per model (one head per modality inside it), so a model has one
    temperature; in a hand-made model with several, the first one's is the model's.

    Raises:
        ValueError: the model has no ObliquePooling (see :func:`oblique_shape`).
    """
    oblique_shape(model, required_by="The model's logit scale")
    return oblique_poolings(model)[0].temperature


def check_truncate_dim(model: nn.Module, truncate_dim: int | None) -> int | None:
    """The number of whole tokens ``truncate_dim`` keeps of ``model``'s embeddings (None for a model that is not
    oblique, where any ``truncate_dim`` is Sentence Transformers' business).

    Raises:
        ValueError: ``truncate_dim`` would cut inside a token of an oblique model (the message lists valid values).
    """
    shape = oblique_shape(model)
    return None if shape is None else shape.kept_tokens(truncate_dim)
