"""Attention maps of K class tokens inside ViT towers (HF CLIP, timm, open_clip): ``ViTTower.class_token_attention``.

The weights are computed from the last block's input with the block's own projections, so each family is checked
against its library: the weights times the block's values, through its output projection, must give the attention
module's own output (any K), and for HF CLIP at K=1 they must equal transformers' ``output_attentions`` (eager).
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import SENTENCES, tiny_bert, tiny_clip, tiny_images, tiny_open_clip, tiny_timm
from torch import nn

import st_oblique
from st_oblique.diagnostics.explanations import attention_figure, explain_pair, token_attention_maps
from st_oblique.modules import ImageClassTokenTransformer, OpenCLIPEncoder
from st_oblique.modules.vit_towers import vit_tower

IMAGE = 32


def pixels(count: int = 2) -> torch.Tensor:
    return torch.randn(count, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def perturb(module: nn.Module, seed: int, scale: float = 0.2) -> None:
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def last_block_input(tower, extra) -> torch.Tensor:
    inputs = []
    handle = tower.last_attention().register_forward_pre_hook(
        lambda module, args, kwargs: inputs.append(args[0] if args else next(iter(kwargs.values()))), with_kwargs=True
    )
    try:
        with torch.no_grad():
            tower.token_states(pixels(), extra)
    finally:
        handle.remove()
    assert len(inputs) == 1
    return inputs[0]


def reproduced_output(tower, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights @ values through the block's output projection, the block's own attention output)."""
    attention = tower.last_attention()
    with torch.no_grad():
        weights = tower.attention_probabilities(attention, hidden)  # (B, heads, L, L)
        batch, length, _ = hidden.shape
        if hasattr(attention, "qkv"):  # timm
            values = attention.qkv(hidden).reshape(batch, length, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)[2]
            mixed = (weights @ values).transpose(1, 2).reshape(batch, length, -1)
            return attention.proj(attention.norm(mixed)), attention(hidden)
        if hasattr(attention, "v_proj"):  # transformers' CLIPAttention
            values = attention.v_proj(hidden).view(batch, length, -1, attention.head_dim).transpose(1, 2)
            mixed = (weights @ values).transpose(1, 2).reshape(batch, length, -1)
            return attention.out_proj(mixed), attention(hidden_states=hidden)[0]
        # torch's nn.MultiheadAttention (open_clip)
        width = hidden.shape[-1]
        values = nn.functional.linear(
            hidden, attention.in_proj_weight[2 * width :], attention.in_proj_bias[2 * width :]
        )
        values = values.view(batch, length, attention.num_heads, -1).transpose(1, 2)
        mixed = (weights @ values).transpose(1, 2).reshape(batch, length, width)
        return attention.out_proj(mixed), attention(hidden, hidden, hidden, need_weights=False)[0]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    return tiny_clip(tmp_path_factory.mktemp("attention_clip"))


@pytest.fixture(scope="module")
def timm_dir(tmp_path_factory) -> str:
    return tiny_timm(tmp_path_factory.mktemp("attention_timm"), "test_vit", image_size=IMAGE)


def family_tower(family: str, num_class_tokens: int, clip_dir: str, timm_dir: str, tmp_path_factory):
    if family == "open_clip":
        name = tiny_open_clip(tmp_path_factory.mktemp("attention_open_clip"))
        torch.manual_seed(0)
        module = OpenCLIPEncoder(name, num_class_tokens=num_class_tokens, load_weights=False).eval()
    else:
        module = ImageClassTokenTransformer(
            clip_dir if family == "hf_clip" else timm_dir, num_class_tokens=num_class_tokens
        )
        module = module.eval()
    perturb(module.model, seed=2)
    if module.extra_class_tokens is not None:
        perturb(module.extra_class_tokens, seed=3, scale=1.0)
    tower = vit_tower(module.model)
    assert tower is not None
    return tower, module.extra_class_tokens


@pytest.mark.parametrize("family", ["hf_clip", "timm", "open_clip"])
@pytest.mark.parametrize("num_class_tokens", [1, 4])
def test_weights_reproduce_the_librarys_own_attention_output(
    family, num_class_tokens, clip_dir, timm_dir, tmp_path_factory
):
    tower, extra = family_tower(family, num_class_tokens, clip_dir, timm_dir, tmp_path_factory)
    hidden = last_block_input(tower, extra)
    ours, theirs = reproduced_output(tower, hidden)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

    maps = tower.class_token_attention(pixels(), extra)
    patches = hidden.shape[1] - num_class_tokens
    assert maps.shape == (2, num_class_tokens, patches)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, num_class_tokens), atol=1e-5, rtol=0)
    if num_class_tokens > 1:  # perturbed extra tokens look at the patches differently
        assert (maps[:, 0] - maps[:, 1]).abs().max() > 1e-4


def test_hf_clip_weights_at_one_class_token_are_transformers_output_attentions(clip_dir):
    from transformers import CLIPModel

    module = ImageClassTokenTransformer(clip_dir, num_class_tokens=1).eval()
    perturb(module.model, seed=2)
    tower = vit_tower(module.model)
    reference = CLIPModel.from_pretrained(clip_dir, attn_implementation="eager").vision_model.eval()
    reference.load_state_dict(tower.module.state_dict())
    with torch.no_grad():
        expected = reference(pixel_values=pixels(), output_attentions=True).attentions[-1].mean(1)[:, :1, 1:]
        maps = tower.class_token_attention(pixels(), None)
    torch.testing.assert_close(maps, expected / expected.sum(-1, keepdim=True), atol=1e-6, rtol=1e-5)


def test_explain_maps_of_a_clip_with_class_tokens_in_the_vit(clip_dir, tmp_path):
    torch.manual_seed(0)
    model = st_oblique.oblique_clip(clip_dir, num_tokens=4, token_dim=8, device="cpu")
    image = tiny_images(1, size=(IMAGE, IMAGE))[0]
    maps = token_attention_maps(model, image)
    assert maps is not None and maps.shape == (4, IMAGE // 8, IMAGE // 8)
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(4), atol=1e-5, rtol=0)
    explanation = explain_pair(model, image, SENTENCES[0])
    figure = attention_figure(image, maps, explanation.contributions)
    assert len([axis for axis in figure.axes if axis.images]) == 4


def test_explain_maps_of_a_timm_vit_dual_encoder(timm_dir, tmp_path):
    bert_dir = tiny_bert(tmp_path / "bert")
    torch.manual_seed(0)
    model = st_oblique.oblique_dual_encoder(bert_dir, timm_dir, num_tokens=4, token_dim=8, device="cpu")
    maps = token_attention_maps(model, tiny_images(1, size=(IMAGE, IMAGE))[0])
    patches = (IMAGE // 16) ** 2 if IMAGE >= 16 else 1
    assert maps is not None and maps.shape[0] == 4 and maps[0].numel() == patches
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(4), atol=1e-5, rtol=0)


def test_saved_figure_is_a_small_palette_png(clip_dir, tmp_path):
    from PIL import Image

    from st_oblique.diagnostics.explanations import save_attention_figure

    torch.manual_seed(0)
    model = st_oblique.oblique_clip(clip_dir, num_tokens=4, token_dim=8, device="cpu")
    image = tiny_images(1, size=(96, 128))[0]
    path = save_attention_figure(image, token_attention_maps(model, image), tmp_path / "explain.png", [0.1] * 4)
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.mode == "P" and saved.width > 200
    assert path.stat().st_size < 200_000
