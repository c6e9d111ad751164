"""A tower's last layers in one common form, so that class-attention blocks can start from them.

:func:`tower_layers` reads the transformer layers of the tower families st-oblique builds on (Hugging Face BERT-like
text encoders, Hugging Face CLIP text and vision towers, open_clip's text transformer and ViT, timm ViTs) into
:class:`LayerWeights` (query/key/value/output projections, MLP, LayerNorms; layer scales folded into the output
projections), with the family's block style (pre- or post-norm, activation), its final LayerNorm and its class token.
:meth:`~st_oblique.modules.class_attention.ClassAttention.initialize_from_tower` copies them. Nothing here runs or
changes the tower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from st_oblique.modules.class_attention import BlockStyle, ClassAttentionBlock
from st_oblique.modules.vit_towers import CLASS_TOKEN_NOISE

logger = logging.getLogger(__name__)

Linear = tuple[Tensor, Tensor | None]
"""``(weight (out, in), bias (out,) or None)``."""

_HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_pytorch_tanh",
    "gelu_pytorch_tanh": "gelu_pytorch_tanh",
    "quick_gelu": "quick_gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


@dataclass
class LayerWeights:
    """One transformer layer's weights, as a :class:`~st_oblique.modules.class_attention.ClassAttentionBlock` takes
    them (layer scales already folded into ``output`` and ``fc2``)."""

    query: Linear
    key: Linear
    value: Linear
    output: Linear
    norm1: nn.LayerNorm
    norm2: nn.LayerNorm
    fc1: Linear
    fc2: Linear

    @torch.no_grad()
    def copy_into(self, block: ClassAttentionBlock) -> None:
        for name in ("query", "key", "value", "output", "fc1", "fc2"):
            weight, bias = getattr(self, name)
            target: nn.Linear = getattr(block, name)
            target.weight.copy_(weight)
            if bias is None:
                target.bias.zero_()
            else:
                target.bias.copy_(bias)
        for name in ("norm1", "norm2"):
            source, target = getattr(self, name), getattr(block, name)
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)


@dataclass
class TowerLayers:
    """What a class-attention head can copy from one tower.

    Attributes:
        family: a short name of the tower family (for messages).
        layers: every transformer layer, first to last.
        width: the layers' width; ``num_heads``: their attention heads; ``hidden_width``: their MLP width.
        style: pre/post-norm, activation, LayerNorm epsilon.
        final_norm: the LayerNorm the tower applies to its output states (pre-norm towers), else None.
        class_token_origin: what :meth:`class_tokens` starts from, in words (None when it gives nothing).
    """

    family: str
    layers: list[LayerWeights]
    width: int
    num_heads: int
    hidden_width: int
    style: BlockStyle
    final_norm: nn.LayerNorm | None
    class_token_origin: str | None
    _class_tokens: Callable[[int], Tensor | None]

    def class_tokens(self, num_tokens: int) -> Tensor | None:
        """``(K, width)`` starting values of K class tokens, or None when the family has no class token to copy."""
        with torch.no_grad():
            return self._class_tokens(num_tokens)


def tower_layers(tower: nn.Module, modality: str, first_token_id: int | None = None) -> TowerLayers | None:
    """The layers of ``tower``'s ``modality`` tower, or None for families whose layers do not fit class attention.

    Args:
        tower: a Hugging Face model (BERT-like encoder, ``CLIPModel``, ``CLIPTextModel``, ``CLIPVisionModel``,
            ``TimmWrapperModel`` around a timm ViT) or an open_clip model.
        modality: ``"text"`` or ``"image"`` (which tower of a two-tower model).
        first_token_id: the tokenizer's first token (``[CLS]``) of a BERT-like encoder: its class tokens start as
            that token's embeddings at positions 0..K-1 (the paper's class tokens before the first layer).
    """
    for reader in (_bert_like, _hf_clip, _open_clip, _timm_vit):
        found = reader(tower, modality, first_token_id)
        if found is not None:
            return found
    return None


# -- Hugging Face BERT-like encoders (post-norm) -------------------------------------------------------------------


def _bert_like(model: nn.Module, modality: str, first_token_id: int | None) -> TowerLayers | None:
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    config = getattr(model, "config", None)
    if modality != "text" or not isinstance(layers, nn.ModuleList) or not layers or config is None:
        return None
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return None  # relative position scores in the attention: a class-attention block has none
    try:
        read = [
            LayerWeights(
                query=_linear(layer.attention.self.query),
                key=_linear(layer.attention.self.key),
                value=_linear(layer.attention.self.value),
                output=_linear(layer.attention.output.dense),
                norm1=_layer_norm(layer.attention.output.LayerNorm),
                norm2=_layer_norm(layer.output.LayerNorm),
                fc1=_linear(layer.intermediate.dense),
                fc2=_linear(layer.output.dense),
            )
            for layer in layers
        ]
        heads = int(layers[-1].attention.self.num_attention_heads)
    except (AttributeError, TypeError):
        return None
    activation = _HF_ACTIVATIONS.get(str(getattr(config, "hidden_act", "")))
    if activation is None:
        return None
    embeddings = getattr(model, "embeddings", None)

    def class_tokens(num_tokens: int) -> Tensor | None:
        if first_token_id is None or embeddings is None:
            return None
        ids = torch.full((1, num_tokens), first_token_id, dtype=torch.long, device=read[0].fc1[0].device)
        was_training = embeddings.training
        embeddings.eval()
        try:
            states = embeddings(input_ids=ids, position_ids=torch.arange(num_tokens, device=ids.device).unsqueeze(0))
        finally:
            embeddings.train(was_training)
        return states[0]

    origin = (
        "the embeddings of the first token ([CLS]) at positions 0..K-1 (the paper's class tokens as the first layer "
        "sees them)"
    )
    return _described("BERT-like", read, heads, activation, None, class_tokens, origin, norm_first=False)


# -- Hugging Face CLIP towers (pre-norm) ----------------------------------------------------------------------------


def _hf_clip(model: nn.Module, modality: str, first_token_id: int | None) -> TowerLayers | None:
    attribute = "text_model" if modality == "text" else "vision_model"
    tower = getattr(model, attribute, model)
    tower = getattr(tower, attribute, tower)  # older transformers wrap the transformer once more
    kinds = {"text": ("CLIPTextModel", "CLIPTextTransformer"), "image": ("CLIPVisionModel", "CLIPVisionTransformer")}
    if type(tower).__name__ not in kinds[modality] or not hasattr(tower, "encoder"):
        return None
    layers = tower.encoder.layers
    activation = _HF_ACTIVATIONS.get(str(tower.config.hidden_act))
    if activation is None:
        return None
    read = [
        LayerWeights(
            query=_linear(layer.self_attn.q_proj),
            key=_linear(layer.self_attn.k_proj),
            value=_linear(layer.self_attn.v_proj),
            output=_linear(layer.self_attn.out_proj),
            norm1=_layer_norm(layer.layer_norm1),
            norm2=_layer_norm(layer.layer_norm2),
            fc1=_linear(layer.mlp.fc1),
            fc2=_linear(layer.mlp.fc2),
        )
        for layer in layers
    ]
    if modality == "text":
        final, class_tokens, origin = tower.final_layer_norm, _no_class_tokens, None
    else:
        embeddings = tower.embeddings
        final = tower.post_layernorm

        def first_state() -> Tensor:
            return tower.pre_layrnorm(embeddings.class_embedding + embeddings.position_embedding.weight[0])

        class_tokens, origin = _copies(first_state), _VIT_CLASS_TOKEN
    return _described("Hugging Face CLIP", read, int(layers[-1].self_attn.num_heads), activation, final, class_tokens, origin)


# -- open_clip (pre-norm) -------------------------------------------------------------------------------------------


def _open_clip(model: nn.Module, modality: str, first_token_id: int | None) -> TowerLayers | None:
    if not type(model).__module__.startswith("open_clip."):
        return None
    if modality == "image":
        tower = getattr(model, "visual", model)
        transformer, final = getattr(tower, "transformer", None), getattr(tower, "ln_post", None)
        class_embedding = getattr(tower, "class_embedding", None)
        if class_embedding is None:
            class_tokens, origin = _no_class_tokens, None
        else:

            def first_state() -> Tensor:
                return tower.ln_pre(tower.class_embedding + tower.positional_embedding[0])

            class_tokens, origin = _copies(first_state), _VIT_CLASS_TOKEN
    else:
        tower = getattr(model, "text", model)
        transformer, final = getattr(tower, "transformer", None), getattr(tower, "ln_final", None)
        class_tokens, origin = _no_class_tokens, None
    blocks = getattr(transformer, "resblocks", None)
    if not blocks or not isinstance(final, nn.LayerNorm):
        return None
    read, activations = [], set()
    for block in blocks:
        attention = getattr(block, "attn", None)
        if type(block).__name__ != "ResidualAttentionBlock" or not isinstance(attention, nn.MultiheadAttention):
            return None  # open_clip's custom blocks (scaled cosine attention, extra norms) do not fit
        if attention.in_proj_weight is None:
            return None
        read.append(
            _fused_qkv_layer(
                (attention.in_proj_weight, attention.in_proj_bias),
                _scaled(_linear(attention.out_proj), block.ls_1),
                _layer_norm(block.ln_1),
                _layer_norm(block.ln_2),
                _linear(block.mlp.c_fc),
                _scaled(_linear(block.mlp.c_proj), block.ls_2),
            )
        )
        activations.add(_torch_activation(block.mlp.gelu))
    if len(activations) != 1 or None in activations:
        return None
    heads = int(blocks[-1].attn.num_heads)
    return _described("open_clip", read, heads, activations.pop(), final, class_tokens, origin)


# -- timm ViTs (pre-norm) -------------------------------------------------------------------------------------------


def _timm_vit(model: nn.Module, modality: str, first_token_id: int | None) -> TowerLayers | None:
    vit = getattr(model, "timm_model", model)
    if modality != "image" or not type(vit).__module__.startswith("timm."):
        return None
    from timm.layers import Mlp
    from timm.models.vision_transformer import Attention, Block

    blocks = getattr(vit, "blocks", None)
    final = getattr(vit, "norm", None)
    if not blocks or not isinstance(final, nn.LayerNorm):
        return None
    read, activations = [], set()
    for block in blocks:
        attention, mlp = block.attn, block.mlp
        plain = (
            type(block) is Block
            and type(attention) is Attention
            and type(mlp) is Mlp
            and all(isinstance(m, nn.Identity) for m in (attention.q_norm, attention.k_norm, attention.norm, mlp.norm))
            and getattr(attention, "gate", None) is None
            and isinstance(block.norm1, nn.LayerNorm)
            and isinstance(block.norm2, nn.LayerNorm)
            and attention.attn_dim == attention.proj.out_features
        )
        if not plain:
            return None
        read.append(
            _fused_qkv_layer(
                _linear(attention.qkv),
                _scaled(_linear(attention.proj), block.ls1),
                block.norm1,
                block.norm2,
                _linear(mlp.fc1),
                _scaled(_linear(mlp.fc2), block.ls2),
            )
        )
        activations.add(_torch_activation(mlp.act))
    if len(activations) != 1 or None in activations:
        return None
    if getattr(vit, "cls_token", None) is not None:

        def first_state() -> Tensor:
            token = vit.cls_token[0, 0]
            if vit.pos_embed is not None and not vit.no_embed_class:
                token = token + vit.pos_embed[0, 0]
            return vit.norm_pre(token)

        class_tokens, origin = _copies(first_state), _VIT_CLASS_TOKEN
    else:
        class_tokens, origin = _no_class_tokens, None
    heads = int(blocks[-1].attn.num_heads)
    return _described("timm ViT", read, heads, activations.pop(), final, class_tokens, origin)


# -- helpers --------------------------------------------------------------------------------------------------------

_VIT_CLASS_TOKEN = (
    "copies of the ViT's class token as its first layer sees it (class embedding + position embedding, after its "
    "pre-LayerNorm if any), the copies after the first with 2% noise"
)


def _described(
    family: str,
    layers: list[LayerWeights],
    heads: int,
    activation: str,
    final: nn.LayerNorm | None,
    class_tokens: Callable[[int], Tensor | None],
    origin: str | None,
    norm_first: bool = True,
) -> TowerLayers:
    return TowerLayers(
        family=family,
        layers=layers,
        width=layers[-1].query[0].shape[1],
        num_heads=heads,
        hidden_width=layers[-1].fc1[0].shape[0],
        style=BlockStyle(norm_first=norm_first, activation=activation, layer_norm_eps=layers[-1].norm1.eps),
        final_norm=final,
        class_token_origin=origin,
        _class_tokens=class_tokens,
    )


def _fused_qkv_layer(
    qkv: Linear, output: Linear, norm1: nn.LayerNorm, norm2: nn.LayerNorm, fc1: Linear, fc2: Linear
) -> LayerWeights:
    """A layer whose query, key and value projections are one ``(3W, W)`` matrix (open_clip, timm)."""
    weight, bias = qkv
    query, key, value = weight.chunk(3)
    biases = (None, None, None) if bias is None else bias.chunk(3)
    return LayerWeights(
        query=(query, biases[0]),
        key=(key, biases[1]),
        value=(value, biases[2]),
        output=output,
        norm1=norm1,
        norm2=norm2,
        fc1=fc1,
        fc2=fc2,
    )


def _copies(first_state: Callable[[], Tensor]) -> Callable[[int], Tensor]:
    """K copies of a class token ``(W,)``: the first exact, the others with :data:`CLASS_TOKEN_NOISE` relative noise."""

    def tokens(num_tokens: int) -> Tensor:
        token = first_state().detach().float()
        noise = torch.randn(num_tokens, token.shape[-1], device=token.device) * CLASS_TOKEN_NOISE * token.std()
        noise[0] = 0
        return token + noise

    return tokens


def _no_class_tokens(num_tokens: int) -> None:
    return None


def _linear(layer: nn.Linear) -> Linear:
    return layer.weight, layer.bias


def _layer_norm(norm: Any) -> nn.LayerNorm:
    if not isinstance(norm, nn.LayerNorm):
        raise TypeError(f"expected a LayerNorm, got {type(norm).__name__}")
    return norm


def _scaled(linear: Linear, layer_scale: nn.Module) -> Linear:
    """``layer_scale(W x + b)`` as one linear map: ``(gamma * W) x + gamma * b`` (timm / open_clip LayerScale)."""
    gamma = getattr(layer_scale, "gamma", None)
    if gamma is None:
        return linear
    weight, bias = linear
    return gamma[:, None] * weight, None if bias is None else gamma * bias


def _torch_activation(module: nn.Module) -> str | None:
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else "gelu_pytorch_tanh"
    name = type(module).__name__
    return {"QuickGELU": "quick_gelu", "ReLU": "relu", "SiLU": "silu"}.get(name)
