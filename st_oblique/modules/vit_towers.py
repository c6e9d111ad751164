"""K class tokens inside Vision Transformer towers (HF CLIP, timm and open_clip ViTs).

- :class:`ExtraClassTokens`: the K−1 learned class tokens a ViT gets in addition to its own, kept outside the
  backbone's weights so that the backbone checkpoint stays loadable by its own library;
- :class:`ViTTower` and :func:`vit_tower`: run a ViT with those tokens inserted right after its class token.

No tower's forward pass is re-implemented here: each family's own forward (``CLIPVisionModel.forward``, timm's
``forward_features``, open_clip's ``VisionTransformer.forward``) runs unchanged, and a forward pre-hook on the
LayerNorm that receives the embedded sequence inserts the extra tokens (registered for the duration of one call,
so the backbone behaves as usual everywhere else, and nothing captures a parameter across calls). The K-token
layout is checked against the paper's official ``VisionTransformer`` (tests/modules/test_vit_tower_parity.py).

Layout of the token states: ``(B, K + N, width)``, the ViT's class token, then the K−1 extra tokens, then the N
patches, after the tower's final LayerNorm.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import Tensor, nn

from st_oblique.modules.serialization import load_module_weights

__all__ = [
    "CLASS_TOKENS_FOLDER",
    "ExtraClassTokens",
    "HFCLIPVisionTower",
    "OpenCLIPViTTower",
    "TimmViTTower",
    "ViTTower",
    "make_extra_class_tokens",
    "vit_class_token_placement",
    "vit_tower",
]

CLASS_TOKENS_FOLDER = "oblique_class_tokens"
"""Folder (inside a module's folder) holding the extra class tokens as ``model.safetensors``."""

CLASS_TOKEN_NOISE = 0.02
"""Std of the noise added to the copies of the class token, relative to the class token's own std."""


class ExtraClassTokens(nn.Module):
    """K−1 learned class tokens that a ViT tower gets in addition to its own class token.

    They are inserted right after the class token, *after* the position embeddings were added, so each extra
    token is one learned vector (class embedding and position folded together, which is the same as the paper's
    K class embeddings with their additive position embeddings). They are initialised to the pretrained class
    token plus its position embedding, plus small noise, so a pretrained model starts with K copies of its own
    class token. The backbone's weights are untouched: the tokens are saved in their own file
    (``oblique_class_tokens/model.safetensors``), and the backbone checkpoint still loads with its library.

    Args:
        num_extra: K − 1.
        width: the ViT's hidden size.
    """

    def __init__(self, num_extra: int, width: int) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.zeros(num_extra, width))

    @torch.no_grad()
    def initialize(self, class_token: Tensor) -> None:
        """Set every token to ``class_token`` (``(width,)``, position embedding included) plus small noise."""
        class_token = class_token.detach().float()
        noise = torch.randn_like(self.tokens) * CLASS_TOKEN_NOISE * class_token.std().clamp(min=1e-6)
        self.tokens.copy_(class_token.to(self.tokens.device) + noise)

    def insert(self, hidden: Tensor) -> Tensor:
        """``(B, 1 + N, H)`` -> ``(B, K + N, H)``: the extra tokens go right after position 0 (the class token)."""
        extra = self.tokens.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
        return torch.cat([hidden[:, :1], extra, hidden[:, 1:]], dim=1)

    def save(self, module_path: str) -> None:
        folder = os.path.join(module_path, CLASS_TOKENS_FOLDER)
        os.makedirs(folder, exist_ok=True)
        save_model(self, os.path.join(folder, "model.safetensors"))

    def load(self, model_name_or_path: str, **kwargs: Any) -> None:
        """Load the tokens saved by :meth:`save` (``kwargs``: hub arguments, incl. the module's ``subfolder``)."""
        subfolder = Path(kwargs.pop("subfolder", "") or "", CLASS_TOKENS_FOLDER).as_posix()
        load_module_weights(self, model_name_or_path, subfolder=subfolder, **kwargs)


@contextmanager
def inserted_before(layer: nn.Module, extra: ExtraClassTokens | None, hook_name: str) -> Iterator[None]:
    """While the block runs, ``layer`` receives the embedded sequence with the extra class tokens inserted.

    Raises:
        RuntimeError: the tower's forward did not call ``layer`` exactly once (its library changed how it runs the
            tower); the message names the hook so that the failure is not a silent loss of the class tokens.
    """
    if extra is None:
        yield
        return
    calls = []

    def insert(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        calls.append(1)
        if args:
            return (extra.insert(args[0]), *args[1:]), kwargs
        name, hidden = next(iter(kwargs.items()))
        return args, {**kwargs, name: extra.insert(hidden)}

    handle = layer.register_forward_pre_hook(insert, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
    if len(calls) != 1:
        raise RuntimeError(
            f"st-oblique inserts the extra class tokens before {hook_name}, but the tower's forward pass called it "
            f"{len(calls)} times instead of once: the installed library changed how it runs this ViT. Please report "
            "this at st-oblique's issue tracker with the library versions (pip list)."
        )


@dataclass
class ViTTower:
    """A view of a model's ViT image tower that can run it with extra class tokens.

    Subclasses know where one family's forward pass takes the embedded sequence (HF CLIP, timm, open_clip). Built
    per call from the module that owns the model, so no parameter is captured in a closure (safe with
    ``DataParallel`` replicas).
    """

    module: nn.Module

    @property
    def width(self) -> int:
        raise NotImplementedError

    def class_token(self) -> Tensor:
        """The class token as the first layer sees it (class embedding + its position embedding), ``(width,)``."""
        raise NotImplementedError

    def token_states(self, pixel_values: Tensor, extra: ExtraClassTokens | None) -> Tensor:
        """Final token states ``(B, K + N, width)`` (after the tower's final LayerNorm); class tokens first."""
        raise NotImplementedError

    def last_attention(self) -> nn.Module:
        """The self-attention module of the tower's last block."""
        raise NotImplementedError

    def attention_probabilities(self, attention: nn.Module, hidden: Tensor) -> Tensor:
        """``(B, heads, L, L)`` softmax weights of ``attention`` on its input ``hidden`` ``(B, L, width)``."""
        raise NotImplementedError

    @property
    def tokens_between_class_and_patches(self) -> int:
        """Prefix tokens of the family other than the class token (timm's register tokens), before the patches."""
        return 0

    def class_token_attention(self, pixel_values: Tensor, extra: ExtraClassTokens | None) -> Tensor:
        """Each class token's attention over the patches in the last block, ``(B, K, N)``, each row summing to 1.

        The weights are the last block's softmax attention (what DINO and CLIP attention maps show), averaged over
        its heads, restricted to the N patch columns and renormalized over them (the share a class token gives to
        the other class tokens is left out). The block's input is read by a forward pre-hook during one ordinary
        forward pass; the weights are computed from it with the block's own projections
        (tests/modules/test_vit_attention_maps.py checks them against the library's own attention output).
        """
        attention = self.last_attention()
        inputs: list[Tensor] = []

        def keep(module: nn.Module, args: tuple, kwargs: dict) -> None:
            inputs.append(args[0] if args else next(iter(kwargs.values())))

        handle = attention.register_forward_pre_hook(keep, with_kwargs=True)
        try:
            self.token_states(pixel_values, extra)
        finally:
            handle.remove()
        if len(inputs) != 1:
            raise RuntimeError(
                f"st-oblique reads the last block's attention input of this {type(self.module).__name__}, but the "
                f"forward pass called {type(attention).__name__} {len(inputs)} times instead of once: the installed "
                "library changed how it runs this ViT."
            )
        weights = self.attention_probabilities(attention, inputs[0]).float().mean(dim=1)  # (B, L, L)
        num_class_tokens = 1 + (0 if extra is None else extra.tokens.shape[0])
        first_patch = num_class_tokens + self.tokens_between_class_and_patches
        rows = weights[:, :num_class_tokens, first_patch:]
        return rows / rows.sum(dim=-1, keepdim=True)


class HFCLIPVisionTower(ViTTower):
    """transformers' CLIP vision tower (``CLIPModel.vision_model`` or a ``CLIPVisionModel``).

    Runs ``CLIPVisionModel.forward``; the extra tokens enter before ``pre_layrnorm``. CLIP applies
    ``post_layernorm`` to the pooled class token only; it is per-token, so it is applied to every token here.
    """

    @property
    def width(self) -> int:
        return self.module.config.hidden_size

    def class_token(self) -> Tensor:
        embeddings = self.module.embeddings
        return embeddings.class_embedding + embeddings.position_embedding.weight[0]

    def token_states(self, pixel_values: Tensor, extra: ExtraClassTokens | None) -> Tensor:
        tower = self.module
        pixel_values = pixel_values.to(tower.embeddings.patch_embedding.weight.dtype)
        with inserted_before(tower.pre_layrnorm, extra, "CLIPVisionModel.pre_layrnorm"):
            hidden = tower(pixel_values=pixel_values).last_hidden_state
        return tower.post_layernorm(hidden)

    def last_attention(self) -> nn.Module:
        return self.module.encoder.layers[-1].self_attn

    def attention_probabilities(self, attention: nn.Module, hidden: Tensor) -> Tensor:
        # CLIPAttention's eager path; the configured one (sdpa) returns no weights
        shape = (*hidden.shape[:-1], -1, attention.head_dim)
        queries = attention.q_proj(hidden).view(shape).transpose(1, 2)
        keys = attention.k_proj(hidden).view(shape).transpose(1, 2)
        return torch.softmax(queries @ keys.transpose(-1, -2) * attention.scale, dim=-1)


class TimmViTTower(ViTTower):
    """A timm ``VisionTransformer`` with a class token (``TimmWrapperModel.timm_model``).

    Runs timm's ``forward_features``; the extra tokens enter before ``norm_pre``, after the position embedding and
    the patch dropout (which keeps the prefix tokens timm knows of).
    """

    @property
    def width(self) -> int:
        return self.module.embed_dim

    def class_token(self) -> Tensor:
        vit = self.module
        token = vit.cls_token[0, 0]
        if vit.pos_embed is not None and not vit.no_embed_class:
            token = token + vit.pos_embed[0, 0]
        return token

    def token_states(self, pixel_values: Tensor, extra: ExtraClassTokens | None) -> Tensor:
        vit = self.module
        with inserted_before(vit.norm_pre, extra, "timm VisionTransformer.norm_pre"):
            return vit.forward_features(pixel_values)

    def last_attention(self) -> nn.Module:
        return self.module.blocks[-1].attn

    def attention_probabilities(self, attention: nn.Module, hidden: Tensor) -> Tensor:
        # timm Attention's non-fused path (the fused one returns no weights)
        batch, length, _ = hidden.shape
        qkv = attention.qkv(hidden).reshape(batch, length, 3, attention.num_heads, attention.head_dim)
        queries, keys, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        queries, keys = attention.q_norm(queries), attention.k_norm(keys)
        return torch.softmax(queries * attention.scale @ keys.transpose(-2, -1), dim=-1)

    @property
    def tokens_between_class_and_patches(self) -> int:
        return self.module.num_prefix_tokens - 1  # register tokens come after the class token


class OpenCLIPViTTower(ViTTower):
    """open_clip's ``VisionTransformer`` with class-token pooling (``model.visual``).

    Runs open_clip's ``VisionTransformer.forward``; the extra tokens enter before ``ln_pre`` (after the patch
    dropout, which keeps the first token), and the transformer's output states are read by a forward hook.
    ``ln_post`` is per-token, so applying it to every token is the same whether open_clip applies it before or after
    pooling (``final_ln_after_pool``).
    """

    @property
    def width(self) -> int:
        return self.module.class_embedding.shape[-1]

    def class_token(self) -> Tensor:
        return self.module.class_embedding + self.module.positional_embedding[0]

    def token_states(self, pixel_values: Tensor, extra: ExtraClassTokens | None) -> Tensor:
        visual = self.module
        states = []
        handle = visual.transformer.register_forward_hook(lambda module, args, output: states.append(output))
        try:
            with inserted_before(visual.ln_pre, extra, "open_clip VisionTransformer.ln_pre"):
                visual(pixel_values.to(visual.conv1.weight.dtype))
        finally:
            handle.remove()
        if len(states) != 1:
            raise RuntimeError(
                "st-oblique reads open_clip's ViT token states from VisionTransformer.transformer, but the tower's "
                f"forward pass called it {len(states)} times: the installed open_clip changed how it runs the ViT."
            )
        return visual.ln_post(states[0])

    def last_attention(self) -> nn.Module:
        return self.module.transformer.resblocks[-1].attn

    def attention_probabilities(self, attention: nn.Module, hidden: Tensor) -> Tensor:
        if not isinstance(attention, nn.MultiheadAttention):
            raise ValueError(
                f"Attention maps of open_clip ViTs need torch's nn.MultiheadAttention blocks; this tower's last block "
                f"uses {type(attention).__name__} (open_clip's custom blocks). Use the token contributions instead."
            )
        # torch's public API returns the per-head weights; open_clip itself asks for none
        _, weights = attention(hidden, hidden, hidden, need_weights=True, average_attn_weights=False)
        return weights


def vit_tower(model: nn.Module) -> ViTTower | None:
    """The :class:`ViTTower` of ``model`` (an HF CLIP/CLIPVision model, a ``TimmWrapperModel`` around a timm ViT
    with a class token, an open_clip model or its ``visual``), or None when its image tower cannot take extra
    class tokens (CNNs, ViTs without a class token or with attention pooling)."""
    tower = getattr(model, "vision_model", model)
    if type(tower).__name__ in ("CLIPVisionModel", "CLIPVisionTransformer"):
        return HFCLIPVisionTower(tower)

    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None:
        # here, not at the top: timm is slow to import and only a timm model (timm already loaded) needs it
        from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer

        if isinstance(timm_model, TimmVisionTransformer) and timm_model.cls_token is not None:
            return TimmViTTower(timm_model)
        return None

    visual = getattr(model, "visual", model)
    if type(visual).__module__.startswith("open_clip."):
        # here, not at the top: only an open_clip model (open_clip already loaded) needs it
        from open_clip.transformer import VisionTransformer as OpenCLIPVisionTransformer

        if (
            isinstance(visual, OpenCLIPVisionTransformer)
            and visual.attn_pool is None
            and visual.pool_type == "tok"
            and visual.positional_embedding.shape[0] == visual.grid_size[0] * visual.grid_size[1] + 1
        ):
            return OpenCLIPViTTower(visual)
    return None


def make_extra_class_tokens(model: nn.Module, num_class_tokens: int) -> ExtraClassTokens | None:
    """The K−1 extra class tokens for ``model``'s ViT tower, initialised from its class token; None when K is 1
    or the tower cannot take class tokens (see :func:`vit_tower`)."""
    tower = vit_tower(model)
    if tower is None or num_class_tokens == 1:
        return None
    tokens = ExtraClassTokens(num_class_tokens - 1, tower.width)
    tokens.initialize(tower.class_token())
    return tokens


def vit_class_token_placement(num_class_tokens: int) -> str:
    """``class_token_placement`` text of a ViT with K class tokens."""
    return (
        f"{num_class_tokens} class tokens at the front: the ViT's class token and {num_class_tokens - 1} learned "
        "class tokens inserted right after it (initialised from the class token plus its position embedding)"
    )
