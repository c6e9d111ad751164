"""ObliquePooling: K unit-norm class tokens of size d out of a backbone's token embeddings."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import torch
from sentence_transformers.base.modules import Module
from torch import Tensor, nn

from st_oblique import manifold
from st_oblique._compat import similarity_fn_name_if_set
from st_oblique.modules.class_attention import BlockStyle, ClassAttention, default_heads, default_width
from st_oblique.modules.logit_scale import OPEN_CLIP_MAX_SCALE, LogitScale
from st_oblique.modules.serialization import SafetensorsModule
from st_oblique.validators import check_positive_int

if TYPE_CHECKING:
    from sentence_transformers.base.model import BaseModel

logger = logging.getLogger(__name__)

TokenSource = Literal["first", "last", "attention", "split", "class_attention"]
TOKEN_SOURCES: tuple[str, ...] = ("first", "last", "attention", "split", "class_attention")
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
        class_attention: the :class:`~st_oblique.modules.class_attention.ClassAttention` options
            (``token_source="class_attention"`` only): ``num_layers``, ``width``, ``num_heads``, ``mlp_ratio``,
            ``style``. The projection then reads the class tokens at the class-attention width.
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
        class_attention: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.token_source = token_source
        if token_source == "class_attention":
            # CaiT's late class tokens: K class tokens read the unchanged tower's states through class-attention blocks
            self.class_attention = ClassAttention(in_features, num_tokens, **(class_attention or {}))
            in_features = self.class_attention.width
        self.in_features = in_features
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
        return manifold.project(self.token_projections(token_embeddings, attention_mask, pooled))

    def token_projections(
        self, token_embeddings: Tensor | None, attention_mask: Tensor | None, pooled: Tensor | None
    ) -> Tensor:
        """The K projected tokens before each is normalized, ``(B, K, d)`` (inputs as :meth:`forward`)."""
        states = self._select(token_embeddings, attention_mask, pooled)
        states = self.norm(states.to(self.projection.dtype))
        if self.projection.ndim == 3:
            return torch.einsum("bki,kid->bkd", states, self.projection)
        return states @ self.projection

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
        if self.token_source == "class_attention":
            return self.class_attention(tokens, mask)
        queries = self.queries.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        context = self.context_norm(tokens)
        padding = None if mask is None else mask == 0
        attended, _ = self.attention(queries, context, context, key_padding_mask=padding, need_weights=False)
        return attended


class ObliquePooling(SafetensorsModule, Module):
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
    - ``"class_attention"``: K learned class tokens that join after the tower (CaiT's late class tokens,
      :class:`~st_oblique.modules.class_attention.ClassAttention`): the tower runs unchanged over its own
      positions, then ``class_attention_layers`` blocks let the K class tokens attend to ``[class tokens; tower
      states]`` (padding never attended) and update only the class tokens. The paper's K tokens at about the plain
      model's encoding speed; works for any backbone with token states.

    A model that serves several modalities through one backbone (e.g. a HF CLIP ``Transformer``) gets one
    head per modality: pass ``in_features`` (and optionally ``token_source``) as a dict keyed by modality;
    the head is chosen by ``features["modality"]``.

    Args:
        in_features: width of the token embeddings, or ``{modality: width}``.
        num_tokens: K, the number of unit tokens. Default 16 as in the paper.
        token_dim: d, the size of each token. Default 32 as in the paper (K*d = 512).
        token_source: one of ``"first"``, ``"last"``, ``"attention"``, ``"split"``, ``"class_attention"``, or
            ``{modality: source}``.
        per_token_projection: a separate ``in_features x d`` projection per token (default) or one shared
            projection (the official code's choice). ``"split"`` requires per-token projections.
        layer_norm: LayerNorm before the projection (default True, CLIP's ``ln_post``).
        num_attention_heads: attention heads for ``token_source="attention"``; by default the largest of
            8, 4, 2, 1 that divides the width.
        logit_scale: the multiplier on the oblique similarity (the inverse temperature) that st-oblique's losses
            train with; default 1 (the paper's raw sums of cosines). It does not change embeddings; the model
            owns it (``self.temperature``, a :class:`~st_oblique.modules.logit_scale.LogitScale`), so it is saved,
            loaded and resumed with the weights, and the model card reports it.
        learnable_logit_scale: learn the scale (in log space, like CLIP). The losses' ``learnable_scale`` argument
            sets this when the loss is built.
        max_logit_scale: the cap of a learned scale (default 100, open_clip's; the paper caps its oblique model at
            3.95; None: no cap).
        logit_bias: the logit bias of a sigmoid (SigLIP) loss; None for other losses (an
            :class:`~st_oblique.ObliqueSigmoidLoss` adds one). ``sigmoid(logit_scale * s + logit_bias)`` is then the
            probability that a pair matches.
        learnable_logit_bias: learn the bias.
        class_attention_layers: class-attention blocks of a ``"class_attention"`` head (default 2, as CaiT).
        class_attention_width: the blocks' width (the tower states are projected down to it first); default
            :data:`~st_oblique.modules.class_attention.DEFAULT_WIDTH` (128) capped at the tower's width.
        class_attention_heads: the blocks' attention heads; default: the largest of 8, 4, 2, 1 dividing the width
            with heads at least 32 wide.
        class_attention_mlp_ratio: the blocks' MLP width over their width (default 4).
        class_attention_style: ``{"norm_first": bool, "activation": str, "layer_norm_eps": float}`` (see
            :class:`~st_oblique.modules.class_attention.BlockStyle`); default CaiT's pre-norm GELU blocks. The
            builders set the tower's own so that its last layers can initialise the blocks.
        Each ``class_attention_*`` option may be one value or ``{modality: value}``; the values used are saved.

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

    required_config_keys = ("in_features",)
    # Folders saved before the scale lived in the model have no temperature tensors: the config's values serve.
    optional_tensor_prefix = "temperature."
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
        "learnable_logit_scale",
        "max_logit_scale",
        "learnable_logit_bias",
        "class_attention_layers",
        "class_attention_width",
        "class_attention_heads",
        "class_attention_mlp_ratio",
        "class_attention_style",
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
        learnable_logit_scale: bool = False,
        max_logit_scale: float | None = OPEN_CLIP_MAX_SCALE,
        learnable_logit_bias: bool = False,
        class_attention_layers: int | dict[str, int] = 2,
        class_attention_width: int | dict[str, int] | None = None,
        class_attention_heads: int | dict[str, int] | None = None,
        class_attention_mlp_ratio: float | dict[str, float] = 4.0,
        class_attention_style: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_positive_int(num_tokens, name="num_tokens")
        check_positive_int(token_dim, name="token_dim")
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
            check_positive_int(width, name="in_features")
        heads = _resolve_heads(num_attention_heads, widths, sources)
        late = _resolve_class_attention(
            widths,
            sources,
            layers=class_attention_layers,
            width=class_attention_width,
            num_heads=class_attention_heads,
            mlp_ratio=class_attention_mlp_ratio,
            style=class_attention_style,
        )

        self.in_features = in_features
        self.num_tokens = num_tokens
        self.token_dim = token_dim
        self.token_source = token_source
        self.per_token_projection = per_token_projection
        self.layer_norm = layer_norm
        self.num_attention_heads = _compact(heads)
        # Models saved before the scale lived here recorded None for "no loss seen": the default scale, 1.
        self.temperature = LogitScale(
            1.0 if logit_scale is None else logit_scale,
            learnable=learnable_logit_scale,
            max_value=max_logit_scale,
            bias=logit_bias,
            learnable_bias=learnable_logit_bias,
        )
        for key in ("layers", "width", "heads", "mlp_ratio", "style"):
            setattr(self, f"class_attention_{key}", _compact_options(late, key))
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
                    _class_attention_options(late.get(modality)),
                )
                for modality in widths
            }
        )

    @property
    def logit_scale(self) -> float:
        """The current logit scale (inverse temperature) of ``temperature``; assigning sets it (fixed or learned
        as before)."""
        return self.temperature.value

    @logit_scale.setter
    def logit_scale(self, value: float) -> None:
        self.temperature.configure(value=value)

    @property
    def logit_bias(self) -> float | None:
        """The current logit bias of a sigmoid loss (None for other losses); assigning sets it (None removes it)."""
        return self.temperature.bias

    @logit_bias.setter
    def logit_bias(self, value: float | None) -> None:
        self.temperature.configure_bias(value)

    @property
    def learnable_logit_scale(self) -> bool:
        return self.temperature.learnable

    @property
    def max_logit_scale(self) -> float | None:
        return self.temperature.max_value

    @property
    def learnable_logit_bias(self) -> bool:
        return self.temperature.learnable_bias

    @property
    def modalities(self) -> list[str]:
        """Modalities with their own head, or ``["default"]`` for one head serving every modality."""
        return list(self.heads)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Adds ``oblique_embeddings`` ``(B, K, d)`` and ``sentence_embedding`` ``(B, K*d)`` to ``features`` (and,
        with gradients enabled, the learnable ``logit_scale``/``logit_bias`` of ``temperature``, ``(B,)`` each).

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
        expected = head.class_attention.in_features if head.token_source == "class_attention" else head.in_features
        if width != expected:
            raise ValueError(
                f"ObliquePooling expects inputs of width {expected} but the backbone gives width {width}. "
                "Build ObliquePooling with in_features equal to the backbone's hidden size."
            )
        oblique = head(tokens, features.get("attention_mask"), pooled)
        features["oblique_embeddings"] = oblique
        features["sentence_embedding"] = manifold.to_flat(oblique)
        if torch.is_grad_enabled():
            # As open_clip's CLIP.forward returns its logit_scale: a learned temperature is then part of every
            # training forward's outputs (tensors with a grad_fn, which a bare parameter lacks), so DDP's search for
            # unused parameters counts it as used and waits for the gradient the loss gives it, instead of marking
            # it ready early and then again ("Expected to mark a variable ready only once").
            features.update(self.temperature.graph_outputs(oblique.shape[0]))
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


_LATE_KEYS = {"layers": "num_layers", "width": "width", "heads": "num_heads", "mlp_ratio": "mlp_ratio", "style": "style"}


def _resolve_class_attention(widths: dict, sources: dict, **options: Any) -> dict[str, dict[str, Any]]:
    """``{head: {"layers", "width", "heads", "mlp_ratio", "style"}}`` for the ``"class_attention"`` heads, defaults
    filled in (the values saved in the config)."""
    resolved = {}
    for name, in_features in widths.items():
        if sources[name] != "class_attention":
            continue
        picked = {key: _for_head(key, value, name) for key, value in options.items()}
        width = default_width(in_features) if picked["width"] is None else picked["width"]
        resolved[name] = {
            "layers": picked["layers"],
            "width": width,
            "heads": default_heads(width) if picked["num_heads"] is None else picked["num_heads"],
            "mlp_ratio": float(picked["mlp_ratio"]),
            "style": BlockStyle.from_config(picked["style"]).to_config(),
        }
    return resolved


def _for_head(key: str, value: Any, head: str) -> Any:
    """One head's value of a ``class_attention_*`` option given as one value or ``{modality: value}``."""
    is_style_dict = key == "style" and isinstance(value, dict) and set(value) <= set(BlockStyle.__dataclass_fields__)
    if isinstance(value, dict) and not is_style_dict:
        if head not in value and head != SINGLE_HEAD:
            raise ValueError(f"class_attention_{key} is given for {sorted(value)} but not for the {head!r} head.")
        return value.get(head)
    return value


def _class_attention_options(resolved: dict[str, Any] | None) -> dict[str, Any] | None:
    """ObliquePooling's resolved options of one head as :class:`ClassAttention` keyword arguments."""
    if resolved is None:
        return None
    return {_LATE_KEYS[key]: value for key, value in resolved.items()}


def _compact_options(resolved: dict[str, dict[str, Any]], key: str) -> Any:
    """One ``class_attention_*`` option as saved: a single value when every class-attention head has the same one
    (or there is a single head), else ``{head: value}``; None without class-attention heads."""
    values = {name: options[key] for name, options in resolved.items()}
    if not values:
        return None
    distinct = {repr(value) for value in values.values()}
    if list(values) == [SINGLE_HEAD] or len(distinct) == 1:
        return next(iter(values.values()))
    return values


def _compact(heads: dict) -> int | dict | None:
    """The resolved head counts as saved in the config: an int for a single head, else a dict (or None)."""
    if list(heads) == [SINGLE_HEAD]:
        return heads[SINGLE_HEAD]
    return {name: value for name, value in heads.items() if value is not None} or None
