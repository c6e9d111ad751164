"""ObliquePooling: K unit-norm class tokens of size d out of a backbone's token embeddings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
from sentence_transformers.base.modules import Module
from torch import Tensor, nn

from st_oblique import manifold
from st_oblique._compat import similarity_fn_name_if_set
from st_oblique.modules.serialization import load_safetensors_module, save_safetensors_module, with_version

if TYPE_CHECKING:
    from sentence_transformers.base.model import BaseModel

logger = logging.getLogger(__name__)

TokenSource = Literal["first", "last", "attention", "split"]
TOKEN_SOURCES: tuple[str, ...] = ("first", "last", "attention", "split")
SINGLE_HEAD = "default"
"""Name of the head used for every modality when ObliquePooling is built with a single ``in_features``."""


class ObliqueHead(nn.Module):
    """One modality's head: pick K token states, LayerNorm them, project each to d, normalize each.

    Args:
        in_features: width of the backbone's token embeddings.
        num_tokens: K.
        token_dim: d.
        token_source: where the K token states come from (see :class:`ObliquePooling`).
        per_token_projection: one ``in_features x d`` matrix per token (True) or one shared matrix
            (False, as in the paper's official code, where the K class tokens already differ).
        layer_norm: apply a LayerNorm to the selected states before the projection (CLIP's ``ln_post``).
        num_attention_heads: heads of the attention pooler (``token_source="attention"`` only).
    """

    def __init__(
        self,
        in_features: int,
        num_tokens: int,
        token_dim: int,
        token_source: TokenSource,
        per_token_projection: bool,
        layer_norm: bool,
        num_attention_heads: int | None,
    ) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.token_source = token_source
        if token_source == "attention":
            # K learned queries over all token states (the MAP head of SigLIP / open_clip's AttentionalPooler).
            self.queries = nn.Parameter(torch.randn(num_tokens, in_features) * in_features**-0.5)
            self.context_norm = nn.LayerNorm(in_features)
            self.attention = nn.MultiheadAttention(in_features, num_attention_heads, batch_first=True)
        self.norm = nn.LayerNorm(in_features) if layer_norm else nn.Identity()
        shape = (num_tokens, in_features, token_dim) if per_token_projection else (in_features, token_dim)
        self.projection = nn.Parameter(torch.randn(shape) * in_features**-0.5)

    def forward(self, token_embeddings: Tensor | None, attention_mask: Tensor | None, pooled: Tensor | None) -> Tensor:
        """
        Args:
            token_embeddings: ``(B, L, in_features)`` or None when the backbone only gives a pooled vector.
            attention_mask: ``(B, L)`` with 1 for real tokens, or None when every position is real.
            pooled: ``(B, in_features)``, the backbone's pooled output, used by ``"split"`` when there are
                no token embeddings.

        Returns:
            ``(B, K, d)``, every token of unit norm.
        """
        states = self._select(token_embeddings, attention_mask, pooled)
        states = self.norm(states.to(self.projection.dtype))
        if self.projection.ndim == 3:
            projected = torch.einsum("bki,kid->bkd", states, self.projection)
        else:
            projected = states @ self.projection
        return manifold.project(projected)

    def _select(self, tokens: Tensor | None, mask: Tensor | None, pooled: Tensor | None) -> Tensor:
        """``(B, K, in_features)`` token states according to ``token_source``."""
        if self.token_source == "split":
            if tokens is None:
                vector = pooled
            else:
                vector = masked_mean(tokens, mask)
            return vector.unsqueeze(1).expand(-1, self.num_tokens, -1)
        if tokens is None:
            raise ValueError(
                f"token_source={self.token_source!r} needs per-token states, but the backbone output has no "
                "'token_embeddings'. Configure the backbone to output token embeddings (for ST's Transformer: "
                "the default for text encoders; for CLIP-like models a modality_config with "
                "method_output_name='last_hidden_state'), or use token_source='split'."
            )
        if self.token_source == "first":
            return select_first(tokens, mask, self.num_tokens)
        if self.token_source == "last":
            return select_last(tokens, mask, self.num_tokens)
        queries = self.queries.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        context = self.context_norm(tokens)
        padding = None if mask is None else mask == 0
        attended, _ = self.attention(queries, context, context, key_padding_mask=padding, need_weights=False)
        return attended


class ObliquePooling(Module):
    """Pools a backbone's token embeddings into a point of the oblique manifold OB(d, K).

    Each of the K output tokens comes from its own token state, goes through a LayerNorm and a projection to
    d, and is L2-normalized on its own (Sun, "Design of the topology for contrastive visual-textual
    alignment", arXiv 2209.02127). The module writes

    - ``features["oblique_embeddings"]``: ``(B, K, d)``, every token of unit norm;
    - ``features["sentence_embedding"]``: ``(B, K*d)``, the flat view. Its dot product with another flat
      embedding is the sum of the K per-token cosines, in ``[-K, K]``, so the model must use
      ``similarity_fn_name="dot"`` (set automatically when unset) and must not end with ``Normalize``.

    Token sources (``token_source``):

    - ``"first"``: the first K positions: class tokens prepended by the backbone, as the official code does
      for bidirectional encoders (see :class:`~st_oblique.modules.ClassTokenTransformer`) and as K class
      embeddings in a ViT.
    - ``"last"``: the K positions ending at the last non-padding token: class positions appended after EOS
      in a causal text tower, where earlier positions cannot see the whole caption.
    - ``"attention"``: K learned queries attending over all (non-padding) token states; works for any
      backbone, including CNN feature maps flattened to tokens.
    - ``"split"``: the masked mean of the token states (or the backbone's pooled vector) projected K times.
      The cheapest option and the only one for a backbone that gives no token states, but *not* the paper's
      design: the K tokens all come from one vector.

    A model that serves several modalities through one backbone (e.g. a HF CLIP ``Transformer``) gets one
    head per modality: pass ``in_features`` (and optionally ``token_source``) as a dict keyed by modality;
    the head is chosen by ``features["modality"]``.

    Args:
        in_features: width of the token embeddings, or ``{modality: width}``.
        num_tokens: K, the number of unit tokens. Default 16 as in the paper.
        token_dim: d, the size of each token. Default 32 as in the paper (K*d = 512).
        token_source: one of ``"first"``, ``"last"``, ``"attention"``, ``"split"``, or ``{modality: source}``.
        per_token_projection: a separate ``in_features x d`` projection per token (default) or one shared
            projection (the official code's choice). ``"split"`` requires per-token projections.
        layer_norm: LayerNorm before the projection (default True, CLIP's ``ln_post``).
        num_attention_heads: attention heads for ``token_source="attention"``; by default the largest of
            8, 4, 2, 1 that divides the width.
        logit_scale: the multiplier on the oblique similarity the model was trained with (the inverse
            temperature); None when unknown. It does not change embeddings; it is reported in the model card and
            turns scores into calibrated probabilities. While an st-oblique loss is training the model, the
            value saved is that loss's current scale (see :meth:`record_temperatures_of`).
        logit_bias: the logit bias of a sigmoid (SigLIP) loss the model was trained with, recorded like
            ``logit_scale``; None for other losses. ``sigmoid(logit_scale * s + logit_bias)`` is then the
            probability that a pair matches.

    Example::

        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Transformer
        from st_oblique import ObliquePooling

        backbone = Transformer("sentence-transformers/all-MiniLM-L6-v2")
        pooling = ObliquePooling(backbone.get_embedding_dimension(), num_tokens=16, token_dim=32,
                                 token_source="attention")
        model = SentenceTransformer(modules=[backbone, pooling], similarity_fn_name="dot")
        embeddings = model.encode(["A man is eating food.", "A man is riding a horse."])  # (2, 512)
        scores = model.similarity(embeddings, embeddings)  # sums of 16 cosines, in [-16, 16]

    :func:`st_oblique.oblique_text_model` builds this with K class tokens in one line.
    """

    config_keys: list[str] = [
        "in_features",
        "num_tokens",
        "token_dim",
        "token_source",
        "per_token_projection",
        "layer_norm",
        "num_attention_heads",
        "logit_scale",
        "logit_bias",
    ]

    def __init__(
        self,
        in_features: int | dict[str, int],
        num_tokens: int = 16,
        token_dim: int = 32,
        token_source: TokenSource | dict[str, TokenSource] = "first",
        per_token_projection: bool = True,
        layer_norm: bool = True,
        num_attention_heads: int | dict[str, int] | None = None,
        logit_scale: float | None = None,
        logit_bias: float | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("num_tokens", num_tokens)
        _check_positive_int("token_dim", token_dim)
        widths, sources = _per_modality(in_features, token_source)
        for source in sources.values():
            if source not in TOKEN_SOURCES:
                raise ValueError(f"token_source must be one of {TOKEN_SOURCES}, got {source!r}.")
            if source == "split" and not per_token_projection:
                raise ValueError(
                    "token_source='split' with per_token_projection=False would give K identical tokens; "
                    "use per_token_projection=True."
                )
        for width in widths.values():
            _check_positive_int("in_features", width)
        heads = _resolve_heads(num_attention_heads, widths, sources)

        self.in_features = in_features
        self.num_tokens = num_tokens
        self.token_dim = token_dim
        self.token_source = token_source
        self.per_token_projection = per_token_projection
        self.layer_norm = layer_norm
        self.num_attention_heads = _compact(heads)
        # A plain attribute (not module state): a callable giving the training loss's current values, if any.
        self._temperature_source: Callable[[], dict[str, float]] | None = None
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self.heads = nn.ModuleDict(
            {
                modality: ObliqueHead(
                    widths[modality],
                    num_tokens,
                    token_dim,
                    sources[modality],
                    per_token_projection,
                    layer_norm,
                    heads[modality],
                )
                for modality in widths
            }
        )

    @property
    def logit_scale(self) -> float | None:
        """The scale the model was trained with: the training loss's current one, else the value loaded or set."""
        return self._recorded("logit_scale")

    @logit_scale.setter
    def logit_scale(self, value: float | None) -> None:
        self._store("logit_scale", value)

    @property
    def logit_bias(self) -> float | None:
        """The sigmoid loss's logit bias the model was trained with (None for other losses)."""
        return self._recorded("logit_bias")

    @logit_bias.setter
    def logit_bias(self, value: float | None) -> None:
        self._store("logit_bias", value)

    def record_temperatures_of(self, source: Callable[[], dict[str, float]]) -> None:
        """Follow ``source`` (an st-oblique loss's ``temperature_values_to_record``): from now on ``logit_scale`` and
        ``logit_bias`` (and so the saved config and the model card) are its current values.

        The loss calls this when it is built, so every save during and after training records the scale it reached,
        whatever trainer runs it. A loss built later for the same model replaces the earlier one; assigning
        ``logit_scale`` or ``logit_bias`` yourself stops following the loss (its other value is kept as it is).
        """
        self._temperature_source = source

    def _store(self, key: str, value: float | None) -> None:
        source = self.__dict__.get("_temperature_source")
        if source is not None:
            self.__dict__.update({f"_stored_{name}": recorded for name, recorded in source().items()})
            self._temperature_source = None
        self.__dict__[f"_stored_{key}"] = None if value is None else float(value)

    def _recorded(self, key: str) -> float | None:
        if self._temperature_source is not None:
            values = self._temperature_source()
            return values.get(key)
        return self.__dict__.get(f"_stored_{key}")

    def __getstate__(self) -> dict[str, Any]:
        # Pickled copies (spawned data loader workers, torch.save) keep the values, not the loss.
        state = dict(self.__dict__)
        for key in ("logit_scale", "logit_bias"):
            state[f"_stored_{key}"] = self._recorded(key)
        state["_temperature_source"] = None
        return state

    @property
    def modalities(self) -> list[str]:
        """Modalities with their own head, or ``["default"]`` for one head serving every modality."""
        return list(self.heads)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Adds ``oblique_embeddings`` ``(B, K, d)`` and ``sentence_embedding`` ``(B, K*d)`` to ``features``.

        Reads ``token_embeddings`` ``(B, L, in_features)``, ``attention_mask`` ``(B, L)`` if present (absent for
        images: every position is real), ``sentence_embedding`` ``(B, in_features)`` for ``"split"`` without token
        embeddings, and ``modality`` to pick the head.
        """
        head = self._head_for(features.get("modality", "text"))
        tokens = features.get("token_embeddings")
        pooled = features.get("sentence_embedding") if tokens is None else None
        if tokens is None and pooled is None:
            raise ValueError(
                "ObliquePooling needs 'token_embeddings' (or, for token_source='split', 'sentence_embedding') from "
                f"the module before it; the features only have {sorted(features)}."
            )
        width = (tokens if tokens is not None else pooled).shape[-1]
        expected = head.projection.shape[-2]
        if width != expected:
            raise ValueError(
                f"ObliquePooling expects inputs of width {expected} but the backbone gives width {width}. "
                "Build ObliquePooling with in_features equal to the backbone's hidden size."
            )
        oblique = head(tokens, features.get("attention_mask"), pooled)
        features["oblique_embeddings"] = oblique
        features["sentence_embedding"] = manifold.to_flat(oblique)
        return features

    def get_embedding_dimension(self) -> int:
        """K * d, the size of the flat embedding."""
        return self.num_tokens * self.token_dim

    def on_model_ready(self, model: BaseModel) -> None:
        """Make the owning model score with ``dot`` and warn about modules that break per-token unit norm."""
        chosen = similarity_fn_name_if_set(model)
        if chosen is None:
            model.similarity_fn_name = "dot"
        elif chosen != "dot":
            logger.warning(
                f"This oblique model uses similarity_fn_name={chosen!r}. Oblique scores are sums "
                "of per-token cosines, i.e. the dot product of the flat embeddings; set "
                "model.similarity_fn_name = 'dot' (cosine ranks the same but divides every score by K)."
            )
        modules = list(model.children())
        if self not in modules:
            return
        for later in modules[modules.index(self) + 1 :]:
            name = type(later).__name__
            if name == "Normalize":
                logger.warning(
                    "A Normalize module follows ObliquePooling. It divides every oblique embedding by sqrt(K), so "
                    "tokens no longer have unit norm and dot scores shrink to sums of cosines / K (an extra "
                    "temperature of 1/K during training). Remove it: ObliquePooling already normalizes each token."
                )
            else:
                logger.warning(
                    f"A {name} module follows ObliquePooling and may change the oblique embeddings; the flat dot "
                    "product is the sum of per-token cosines only if every token keeps unit norm."
                )

    def get_config_dict(self) -> dict[str, Any]:
        return with_version(super().get_config_dict())

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        save_safetensors_module(self, output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, **kwargs) -> ObliquePooling:
        """Load from a model folder or Hub repo (``subfolder`` and hub arguments as for any ST module).

        Raises:
            ObliqueLoadError: a missing, unreadable or inconsistent ``config.json`` / ``model.safetensors``.
        """
        return load_safetensors_module(cls, model_name_or_path, required_keys=["in_features"], **kwargs)

    def _head_for(self, modality: Any) -> ObliqueHead:
        if SINGLE_HEAD in self.heads:
            return self.heads[SINGLE_HEAD]
        if isinstance(modality, str) and modality in self.heads:
            return self.heads[modality]
        raise ValueError(
            f"ObliquePooling has heads for {sorted(self.heads)} but received {modality!r} inputs. Encode each "
            "modality separately, or add a head for it (in_features as a dict keyed by modality)."
        )

    def __repr__(self) -> str:
        config = {key: value for key, value in self.get_config_dict().items() if key in self.config_keys}
        return f"ObliquePooling({config})"


def select_first(tokens: Tensor, mask: Tensor | None, num_tokens: int) -> Tensor:
    """The first K token states, ``(B, K, H)``; fails if any of them is padding."""
    if tokens.shape[1] < num_tokens:
        raise ValueError(
            f"token_source='first' needs at least num_tokens={num_tokens} positions but the input has "
            f"{tokens.shape[1]}. The backbone must prepend K class tokens (ClassTokenTransformer for text)."
        )
    if mask is not None and checking_data() and not bool(mask[:, :num_tokens].bool().all()):
        raise ValueError(
            f"token_source='first' would select padding: some of the first {num_tokens} positions are masked out. "
            "The backbone must prepend K class tokens (use ClassTokenTransformer(num_class_tokens=K)) and pad on "
            "the right; or use token_source='attention'."
        )
    return tokens[:, :num_tokens]


def select_last(tokens: Tensor, mask: Tensor | None, num_tokens: int) -> Tensor:
    """The K token states ending at each row's last non-padding position, ``(B, K, H)``."""
    length = tokens.shape[1]
    if mask is None:
        if length < num_tokens:
            raise ValueError(f"token_source='last' needs at least num_tokens={num_tokens} positions, the input has {length}.")
        return tokens[:, length - num_tokens :]
    valid = mask.bool()
    if checking_data() and not bool(valid.any(dim=1).all()):
        raise ValueError("token_source='last' received a row without any non-padding token.")
    last = length - 1 - valid.flip(1).int().argmax(dim=1)
    offsets = torch.arange(num_tokens - 1, -1, -1, device=tokens.device)
    positions = last.unsqueeze(1) - offsets  # (B, K), ascending
    if checking_data() and (bool((positions < 0).any()) or not bool(valid.gather(1, positions.clamp(min=0)).all())):
        raise ValueError(
            f"token_source='last' needs num_tokens={num_tokens} consecutive real tokens ending at the last "
            "non-padding position, but some rows are shorter. The backbone must append K class positions after "
            "EOS (e.g. the oblique CLIP text tower)."
        )
    return tokens.gather(1, positions.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def checking_data() -> bool:
    """Whether to run the checks that read tensor values (padding in the wrong place). Not while a graph is being
    exported (``torch.export``, ONNX): a graph cannot branch on data, and the exported model's preprocessing builds
    the same inputs the checks guard (see :mod:`st_oblique.export`)."""
    return not torch.compiler.is_exporting()


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the non-padding positions, ``(B, H)``."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _per_modality(in_features: int | dict[str, int], token_source: str | dict[str, str]) -> tuple[dict, dict]:
    """Normalize the (possibly per-modality) arguments into ``{head_name: value}`` dicts with equal keys."""
    if isinstance(in_features, dict) and not in_features:
        raise ValueError("in_features must not be an empty dict.")
    if isinstance(in_features, dict):
        widths = dict(in_features)
    elif isinstance(token_source, dict):
        widths = dict.fromkeys(token_source, in_features)
    else:
        widths = {SINGLE_HEAD: in_features}
    if isinstance(token_source, dict):
        if set(token_source) != set(widths):
            raise ValueError(
                f"token_source is given for modalities {sorted(token_source)} but in_features for {sorted(widths)}; "
                "they must name the same modalities."
            )
        sources = dict(token_source)
    else:
        sources = dict.fromkeys(widths, token_source)
    return widths, sources


def _resolve_heads(num_attention_heads: int | dict[str, int] | None, widths: dict, sources: dict) -> dict:
    resolved = {}
    for name, width in widths.items():
        if sources[name] != "attention":
            resolved[name] = None
            continue
        heads = num_attention_heads.get(name) if isinstance(num_attention_heads, dict) else num_attention_heads
        if heads is None:
            heads = next(h for h in (8, 4, 2, 1) if width % h == 0)
        if width % heads:
            raise ValueError(f"num_attention_heads={heads} must divide the width {width} of the {name!r} inputs.")
        resolved[name] = heads
    return resolved


def _compact(heads: dict) -> int | dict | None:
    """The resolved head counts as saved in the config: an int for a single head, else a dict (or None)."""
    if list(heads) == [SINGLE_HEAD]:
        return heads[SINGLE_HEAD]
    return {name: value for name, value in heads.items() if value is not None} or None


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
