"""ClassAttention: K class tokens that join a tower late, through CaiT's class-attention blocks.

Touvron et al., "Going deeper with Image Transformers" (CaiT, ICCV 2021, arXiv 2103.17239): the trunk runs once
over the inputs' own positions; only then do class tokens join, in a few *class-attention* layers where they are the
only queries and the trunk's token states are keys/values that are not updated. Here K class tokens join at once (the
oblique manifold's K tokens); each block is

.. code-block:: text

    context = [class tokens; tower tokens]                     (B, K + L, W)
    class  += Attention(queries = class tokens, keys = values = context, padding masked)
    class  += MLP(class)

with the LayerNorms before (``norm_first=True``, CaiT, CLIP, ViTs) or after (``norm_first=False``, BERT) each
residual branch. The cost grows with K + L per block (keys/values) and with K (queries, MLP), never with L², and the
trunk is the plain tower: an oblique model with late class tokens encodes texts no longer than the plain model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from st_oblique.validators import check_positive_int, check_positive_number

DEFAULT_WIDTH = 128
"""Width of the class-attention blocks when not given (capped at the tower's width); chosen by measurement: at
K=16 two blocks of width 128 keep all-MiniLM-L6-v2 and the ViT-B/16-shaped CLIP at >= 0.9x the plain model's encode
speed (evaluation/benchmarks/encode_throughput.py, class_token_throughput.py)."""

CLASS_TOKEN_STD = 0.02
"""Std of randomly initialised class tokens (CaiT's truncated normal)."""


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: OpenAI CLIP's activation (Hugging Face ``quick_gelu``, open_clip ``QuickGELU``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "quick_gelu": QuickGELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}
"""The MLP's activations by name (Hugging Face's ``hidden_act`` spelling)."""


@dataclass(frozen=True)
class BlockStyle:
    """How a family of towers arranges its blocks; class-attention blocks copy it so a tower's layers fit them.

    Attributes:
        norm_first: LayerNorm before each residual branch (pre-norm: CaiT, CLIP, ViTs) or after the residual sum
            (post-norm: BERT and its relatives).
        activation: the MLP's activation, one of :data:`ACTIVATIONS`.
        layer_norm_eps: the LayerNorms' epsilon.
    """

    norm_first: bool = True
    activation: str = "gelu"
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}.")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}.")

    @classmethod
    def from_config(cls, config: BlockStyle | Mapping[str, Any] | None) -> BlockStyle:
        """A style from a saved config dict (None: CaiT's pre-norm GELU blocks)."""
        if config is None:
            return cls()
        if isinstance(config, BlockStyle):
            return config
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"class-attention style has unknown keys {sorted(unknown)}; it takes {list(cls.__dataclass_fields__)}.")
        return cls(**config)

    def to_config(self) -> dict[str, Any]:
        return asdict(self)


class ClassAttentionBlock(nn.Module):
    """One class-attention block: the K class tokens attend to ``[class tokens; tower tokens]``, then an MLP.

    Only the class tokens are queries and only they are updated; the tower tokens are keys/values.

    Args:
        width: W, the width of class tokens and tower tokens.
        num_heads: attention heads (must divide W).
        hidden_width: the MLP's hidden width.
        style: pre- or post-norm, activation, LayerNorm epsilon.

    Inputs: ``class_tokens`` ``(B, K, W)``, ``tokens`` ``(B, L, W)``, ``key_mask`` ``(B, 1, 1, K + L)`` bool (True =
    may be attended) or None. Output: ``(B, K, W)``.
    """

    def __init__(self, width: int, num_heads: int, hidden_width: int, style: BlockStyle) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"class_attention_heads={num_heads} must divide the class-attention width {width}.")
        self.num_heads = num_heads
        self.norm_first = style.norm_first
        self.norm1 = nn.LayerNorm(width, eps=style.layer_norm_eps)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.output = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=style.layer_norm_eps)
        self.fc1 = nn.Linear(width, hidden_width)
        self.activation = ACTIVATIONS[style.activation]()
        self.fc2 = nn.Linear(hidden_width, width)

    def forward(self, class_tokens: Tensor, tokens: Tensor, key_mask: Tensor | None) -> Tensor:
        queries, context = self._attention_inputs(class_tokens, tokens)
        attended = functional.scaled_dot_product_attention(
            self._heads(self.query(queries)),
            self._heads(self.key(context)),
            self._heads(self.value(context)),
            attn_mask=key_mask,
        )
        update = self.output(attended.transpose(1, 2).flatten(2))
        if self.norm_first:
            class_tokens = class_tokens + update
            return class_tokens + self.fc2(self.activation(self.fc1(self.norm2(class_tokens))))
        class_tokens = self.norm1(class_tokens + update)
        return self.norm2(class_tokens + self.fc2(self.activation(self.fc1(class_tokens))))

    def attention_probabilities(self, class_tokens: Tensor, tokens: Tensor, key_mask: Tensor | None) -> Tensor:
        """``(B, heads, K, K + L)``: the softmax weights :meth:`forward` uses (columns: class tokens, then tokens)."""
        queries, context = self._attention_inputs(class_tokens, tokens)
        query, key = self._heads(self.query(queries)), self._heads(self.key(context))
        scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask, float("-inf"))
        return scores.softmax(dim=-1)

    def _attention_inputs(self, class_tokens: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        context = torch.cat([class_tokens, tokens], dim=1)
        if not self.norm_first:
            return class_tokens, context
        context = self.norm1(context)
        return context[:, : class_tokens.shape[1]], context

    def _heads(self, states: Tensor) -> Tensor:
        """``(B, N, W)`` -> ``(B, heads, N, W / heads)``."""
        return states.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)


class ClassAttention(nn.Module):
    """K learned class tokens that read a tower's token states through ``num_layers`` class-attention blocks.

    The tower runs unchanged over its own positions; this module adds the K class tokens after it (CaiT's late
    class tokens). With ``width`` smaller than the tower's, the tower tokens are first projected down to ``width``
    (one linear map), and the class tokens live at ``width``: the cost per class token then shrinks with width².

    Initialisation (:meth:`initialize_from_tower`, called by st-oblique's builders): at the tower's own width, block
    i copies the tower's ``num_layers - i``-th last layer (attention, MLP, LayerNorms; layer scales folded into the
    output projections), the final LayerNorm copies the tower's final one (pre-norm towers), and the class tokens
    start as the tower's own class token where the family has one (see
    :func:`~st_oblique.modules.tower_layers.tower_layers`). Given the hidden states entering the tower's layer and
    class tokens equal to that layer's inputs at K of its positions, a copied block reproduces the layer's outputs
    at those positions. At a reduced width nothing fits, so everything is random: the projection (PyTorch's default
    ``Linear`` initialisation), the blocks (PyTorch's defaults, LayerNorms at 1/0) and the class tokens (normal,
    std 0.02, as CaiT).

    Args:
        in_features: width of the tower's token states.
        num_tokens: K.
        num_layers: class-attention blocks (CaiT uses 2).
        width: W, the blocks' width; None: :data:`DEFAULT_WIDTH` capped at ``in_features``.
        num_heads: attention heads; None: the largest of 8, 4, 2, 1 dividing W with heads of at least 32.
        mlp_ratio: the MLP's hidden width over W.
        style: pre- or post-norm, activation, LayerNorm epsilon (:class:`BlockStyle`; default CaiT's).

    Inputs: ``tokens`` ``(B, L, in_features)``, ``attention_mask`` ``(B, L)`` (1 = real token; padding is never
    attended) or None. Output: ``(B, K, W)``, the class tokens after the last block (and the final LayerNorm of a
    pre-norm style).

    Example::

        from st_oblique.modules.class_attention import ClassAttention

        late = ClassAttention(384, num_tokens=16, num_layers=2, width=128)
        class_states = late(token_embeddings, attention_mask)  # (B, 16, 128)
    """

    def __init__(
        self,
        in_features: int,
        num_tokens: int,
        num_layers: int = 2,
        width: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        style: BlockStyle | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        style = BlockStyle.from_config(style)
        width = default_width(in_features) if width is None else width
        num_heads = default_heads(width) if num_heads is None else num_heads
        for name, value in (("num_layers", num_layers), ("class_attention_width", width), ("num_heads", num_heads)):
            check_positive_int(value, name=name)
        check_positive_number(mlp_ratio, name="class_attention_mlp_ratio")
        self.in_features = in_features
        self.num_tokens = num_tokens
        self.width = width
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.style = style
        self.input_projection = nn.Linear(in_features, width) if width != in_features else nn.Identity()
        self.class_tokens = nn.Parameter(torch.randn(num_tokens, width) * CLASS_TOKEN_STD)
        hidden = max(1, round(width * mlp_ratio))
        self.blocks = nn.ModuleList(ClassAttentionBlock(width, num_heads, hidden, style) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(width, eps=style.layer_norm_eps) if style.norm_first else nn.Identity()

    def forward(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        class_tokens, tokens, key_mask = self._inputs(tokens, attention_mask)
        for block in self.blocks:
            class_tokens = block(class_tokens, tokens, key_mask)
        return self.final_norm(class_tokens)

    def attention_maps(self, tokens: Tensor, attention_mask: Tensor | None = None) -> list[Tensor]:
        """Per block, the class tokens' attention over ``[class tokens; tower tokens]``, ``(B, heads, K, K + L)``."""
        class_tokens, tokens, key_mask = self._inputs(tokens, attention_mask)
        maps = []
        for block in self.blocks:
            maps.append(block.attention_probabilities(class_tokens, tokens, key_mask))
            class_tokens = block(class_tokens, tokens, key_mask)
        return maps

    def _inputs(self, tokens: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        tokens = self.input_projection(tokens.to(self.class_tokens.dtype))
        class_tokens = self.class_tokens.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        if attention_mask is None:
            return class_tokens, tokens, None
        class_columns = attention_mask.new_ones(attention_mask.shape[0], self.num_tokens)
        key_mask = torch.cat([class_columns, attention_mask], dim=1).bool()
        return class_tokens, tokens, key_mask[:, None, None, :]

    @torch.no_grad()
    def initialize_from_tower(self, tower: Any) -> str:
        """Copy what fits from ``tower`` (a :class:`~st_oblique.modules.tower_layers.TowerLayers`); returns a sentence
        saying what was initialised how (for logs and docstrings).

        Blocks are copied only when the width, the heads, the style and the number of layers fit; the class tokens
        only at the tower's width; otherwise everything stays random.
        """
        if tower is None:
            return "no tower layers to copy (the tower family is not known): the class-attention blocks are random"
        if self.width != tower.width:
            return (
                f"width {self.width} differs from the tower's {tower.width}: the projection, the class-attention blocks "
                "and the class tokens are random"
            )
        done = []
        fits = (
            len(tower.layers) >= len(self.blocks)
            and tower.num_heads == self.num_heads
            and tower.style == self.style
            and round(self.width * self.mlp_ratio) == tower.hidden_width
        )
        if fits:
            for block, layer in zip(self.blocks, tower.layers[-len(self.blocks) :], strict=True):
                layer.copy_into(block)
            done.append(f"the {len(self.blocks)} blocks copy the tower's last {len(self.blocks)} layers")
            if tower.final_norm is not None and isinstance(self.final_norm, nn.LayerNorm):
                self.final_norm.load_state_dict(tower.final_norm.state_dict())
                done.append("the final LayerNorm copies the tower's")
        else:
            done.append(
                f"the blocks are random (they need {len(self.blocks)} layers, {self.num_heads} heads, MLP width "
                f"{round(self.width * self.mlp_ratio)} and style {self.style.to_config()}; the tower has "
                f"{len(tower.layers)}, {tower.num_heads}, {tower.hidden_width} and {tower.style.to_config()})"
            )
        class_tokens = tower.class_tokens(self.num_tokens)
        if class_tokens is not None:
            self.class_tokens.copy_(class_tokens.to(self.class_tokens))
            done.append(f"the class tokens start as {tower.class_token_origin}")
        else:
            done.append("the class tokens are random")
        return "; ".join(done)


def default_width(in_features: int) -> int:
    """:data:`DEFAULT_WIDTH`, capped at the tower's width."""
    return min(in_features, DEFAULT_WIDTH)


def default_heads(width: int) -> int:
    """The largest of 8, 4, 2, 1 heads dividing ``width`` with heads at least 32 wide (1 for narrow widths)."""
    return next((h for h in (8, 4, 2) if width % h == 0 and width // h >= 32), 1)

