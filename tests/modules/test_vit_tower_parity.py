"""The K-class-token ViT layout and the re-implemented open_clip text forward, against independent implementations.

- HF CLIP and open_clip ViTs with K=16 class tokens (st-oblique's layout: the ViT's class token, K−1 extra tokens
  inserted after the position embeddings, then the patches) give the outputs of the paper's official
  ``VisionTransformer`` (``../shared/reference/clip-mtob``, imported as a test oracle) with the same random weights;
- a timm ViT through ``TimmWrapperModel``: K=1 is a fresh timm model's ``forward_features``, K>1 is timm's own
  register tokens;
- open_clip's causal text tower: ``OpenCLIPEncoder``'s forward on trimmed input is ``encode_text``'s on full-length
  input, and at K=1 its EOT state is what ``encode_text`` projects.

Every comparison prints its largest absolute difference (``pytest -s``).
"""

from __future__ import annotations

import copy
import importlib.util
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tiny_models import SENTENCES, tiny_open_clip, tiny_timm
from torch import nn
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from st_oblique.modules import ImageClassTokenTransformer, ObliquePooling, OpenCLIPEncoder

K, D = 16, 32  # the paper's K and d
WIDTH, LAYERS, HEADS, PATCH, IMAGE = 256, 2, 4, 16, 64  # official CLIP gives its ViT width // 64 heads
TOLERANCE = 1e-5


def max_diff(name: str, actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Print and return the largest absolute difference (shapes must match)."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double()).abs().max().item()
    print(f"\n{name}: max abs diff {diff:.3e}")
    return diff


@torch.no_grad()
def perturb(module: nn.Module, seed: int, scale: float = 0.1) -> None:
    """Add noise to every parameter, so LayerNorm weights and biases are not 1 and 0 (a mix-up must show)."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def pixels(count: int = 3, size: int = IMAGE) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1))


# -- the paper's official ViT --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtob(shared):
    """The official ``modeling_clip_helper_mtob`` module (MIT), imported from ../shared without copying it."""
    path = shared / "reference" / "clip-mtob" / "modeling_clip_helper_mtob.py"
    if not path.exists():
        pytest.skip(f"the paper's official code is not at {path.parent} (see ../shared/README.md)")
    spec = importlib.util.spec_from_file_location("clip_mtob_oracle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def official(mtob):
    """The official CLIP with K=16 class tokens (d=32), tiny and random; only its image tower is compared."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nn.TransformerEncoder's nested-tensor notice
        model = mtob.CLIP(
            embed_dim=D, image_resolution=IMAGE, vision_layers=LAYERS, vision_width=WIDTH, vision_patch_size=PATCH,
            output_dim=D, n_class_tokens=K, context_length=4, vocab_size=16, transformer_width=32,
            transformer_heads=2, transformer_layers=1,
        )
    with torch.no_grad():  # the two parameters the official code creates with torch.empty
        model.positional_embedding.normal_(std=0.01)
        model.text_projection.normal_(std=32**-0.5)
    perturb(model.visual, seed=0)
    visual = model.visual
    # The official MLP uses exact GELU (nn.GELU, QuickGELU commented out); the towers below are built with it too.
    assert visual.transformer.resblocks[0].attn.num_heads == HEADS
    assert isinstance(visual.transformer.resblocks[0].mlp.gelu, nn.GELU)
    return model.eval()


def official_extra_tokens(visual: nn.Module) -> torch.Tensor:
    """Official class tokens 1..K−1 with their additive position embeddings folded in: st-oblique's extra tokens."""
    return visual.class_embedding[1:] + visual.positional_embedding[1:K]


def official_to_single_class_token(visual: nn.Module) -> dict[str, torch.Tensor]:
    """The official ViT's state dict with one class token: token 0 and position rows 0, K, K+1, ... (patches)."""
    state = {name: value.detach().clone() for name, value in visual.state_dict().items()}
    state["class_embedding"] = state["class_embedding"][0]
    state["positional_embedding"] = torch.cat([state["positional_embedding"][:1], state["positional_embedding"][K:]])
    return state


def official_to_hf_clip(visual: nn.Module) -> dict[str, torch.Tensor]:
    """The official ViT's weights under ``CLIPVisionModel``'s names (in_proj split into q, k, v)."""
    single = official_to_single_class_token(visual)
    state = {
        "embeddings.class_embedding": single["class_embedding"],
        "embeddings.patch_embedding.weight": single["conv1.weight"],
        "embeddings.position_embedding.weight": single["positional_embedding"],
    }
    for official_name, hf_name in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for kind in ("weight", "bias"):
            state[f"{hf_name}.{kind}"] = single[f"{official_name}.{kind}"]
    for index in range(LAYERS):
        source, target = f"transformer.resblocks.{index}.", f"encoder.layers.{index}."
        weights = single[source + "attn.in_proj_weight"].chunk(3)
        biases = single[source + "attn.in_proj_bias"].chunk(3)
        for name, weight, bias in zip("qkv", weights, biases, strict=True):
            state[target + f"self_attn.{name}_proj.weight"] = weight
            state[target + f"self_attn.{name}_proj.bias"] = bias
        for official_name, hf_name in (
            ("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
            ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"),
        ):
            for kind in ("weight", "bias"):
                state[f"{target}{hf_name}.{kind}"] = single[f"{source}{official_name}.{kind}"]
    return state


def official_head(visual: nn.Module) -> ObliquePooling:
    """The official read-out as an ObliquePooling: the first K states, one shared projection, no extra LayerNorm
    (``ln_post`` belongs to the tower)."""
    pooling = ObliquePooling(
        WIDTH, num_tokens=K, token_dim=D, token_source="first", per_token_projection=False, layer_norm=False
    )
    with torch.no_grad():
        pooling.heads["default"].projection.copy_(visual.proj)
    return pooling.eval()


def assert_matches_official(official, tower: nn.Module, name: str) -> None:
    """``tower`` (with the official weights) + the official head give the official per-token-normalized output."""
    head = official_head(official.visual)
    images = pixels()
    with torch.no_grad():
        features = tower({"pixel_values": images.clone(), "modality": "image"})
        states = features["token_embeddings"]
        oblique = head(features)["oblique_embeddings"]
        expected_states = official.visual(images.clone(), with_proj=False)  # ln_post of the K class tokens
        expected = F.normalize(official.encode_image(images.clone()), dim=-1)
    assert states.shape == (len(images), K + (IMAGE // PATCH) ** 2, WIDTH)
    assert max_diff(f"{name}: K class-token states", states[:, :K], expected_states) <= TOLERANCE
    assert max_diff(f"{name}: oblique embeddings", oblique, expected) <= TOLERANCE


@pytest.mark.shared
def test_hf_clip_vit_with_16_class_tokens_is_the_official_vit(official, tmp_path):
    config = CLIPVisionConfig(
        hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        image_size=IMAGE, patch_size=PATCH, hidden_act="gelu",  # exact GELU, as the official MLP
    )
    clip_vision = CLIPVisionModel(config)
    clip_vision.load_state_dict(official_to_hf_clip(official.visual), strict=True)
    clip_vision.save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}).save_pretrained(
        tmp_path
    )

    tower = ImageClassTokenTransformer(str(tmp_path), num_class_tokens=K).eval()
    assert tower.extra_class_tokens.tokens.shape == (K - 1, WIDTH)
    with torch.no_grad():
        tower.extra_class_tokens.tokens.copy_(official_extra_tokens(official.visual))
    assert_matches_official(official, tower, "HF CLIP ViT vs official")


@pytest.mark.shared
def test_open_clip_vit_with_16_class_tokens_is_the_official_vit(official, tmp_path):
    vision_cfg = {"image_size": IMAGE, "layers": LAYERS, "width": WIDTH, "head_width": WIDTH // HEADS,
                  "patch_size": PATCH}
    encoder = OpenCLIPEncoder(
        tiny_open_clip(tmp_path), num_class_tokens=K, load_weights=False,
        config_kwargs={"embed_dim": D, "vision_cfg": vision_cfg, "quick_gelu": False},
    ).eval()
    visual = encoder.model.visual
    assert isinstance(visual.transformer.resblocks[0].mlp.gelu, nn.GELU), "the tower must use exact GELU"
    # open_clip's ViT has the official parameter names; only the class token count differs.
    visual.load_state_dict(official_to_single_class_token(official.visual), strict=True)
    with torch.no_grad():
        encoder.extra_class_tokens.tokens.copy_(official_extra_tokens(official.visual))
    assert_matches_official(official, encoder, "open_clip ViT vs official")


# -- timm ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_dir(tmp_path_factory) -> str:
    return tiny_timm(tmp_path_factory.mktemp("parity_timm_vit"), "test_vit", image_size=IMAGE)


def stock_timm_vit(timm_dir: str) -> nn.Module:
    """A timm ``test_vit`` built by timm itself, with the weights of the ``timm_wrapper`` checkpoint."""
    vit = timm.create_model("test_vit", img_size=IMAGE, num_classes=0)  # TimmWrapperModel drops the head
    prefix = "timm_model."
    state = {name[len(prefix) :]: value for name, value in load_file(f"{timm_dir}/model.safetensors").items()}
    vit.load_state_dict(state, strict=True)
    return vit.eval()


def test_timm_vit_with_one_class_token_is_timms_forward_features(timm_dir):
    tower = ImageClassTokenTransformer(timm_dir, num_class_tokens=1).eval()
    assert type(tower.model).__name__ == "TimmWrapperModel" and tower.extra_class_tokens is None
    images = pixels()
    with torch.no_grad():
        states = tower({"pixel_values": images.clone(), "modality": "image"})["token_embeddings"]
        expected = stock_timm_vit(timm_dir).forward_features(images.clone())
    assert max_diff("timm ViT K=1 vs forward_features", states, expected) == 0.0


@pytest.mark.parametrize("num_class_tokens", [2, K])
def test_timm_vit_extra_class_tokens_are_timms_register_tokens(timm_dir, num_class_tokens):
    """timm inserts its register tokens right after the class token. With ``no_embed_class=False`` (``test_vit``)
    its position table has rows for them too (timm's ``_pos_embed``: concatenate, then add); zero rows make them
    tokens without a position embedding, as st-oblique's extra tokens (whose position is folded in)."""
    tower = ImageClassTokenTransformer(timm_dir, num_class_tokens=num_class_tokens).eval()
    perturb(tower.model.timm_model, seed=2)  # class token, positions and LayerNorms away from their init
    perturb(tower.extra_class_tokens, seed=4, scale=1.0)  # the extra tokens differ clearly from each other
    extra = num_class_tokens - 1
    registers = timm.create_model("test_vit", img_size=IMAGE, num_classes=0, reg_tokens=extra).eval()
    assert not registers.no_embed_class and registers.num_prefix_tokens == 1 + extra
    state = {name: value.detach().clone() for name, value in tower.model.timm_model.state_dict().items()}
    positions = state["pos_embed"]
    state["pos_embed"] = torch.cat([positions[:, :1], torch.zeros(1, extra, positions.shape[-1]), positions[:, 1:]], 1)
    state["reg_token"] = tower.extra_class_tokens.tokens.detach().clone().unsqueeze(0)
    registers.load_state_dict(state, strict=True)

    images = pixels()
    with torch.no_grad():
        states = tower({"pixel_values": images.clone(), "modality": "image"})["token_embeddings"]
        expected = registers.forward_features(images.clone())
    assert states.shape == (len(images), num_class_tokens + (IMAGE // 16) ** 2, tower.model.timm_model.embed_dim)
    assert max_diff(f"timm ViT K={num_class_tokens} vs timm register tokens", states, expected) <= TOLERANCE


# -- open_clip's causal text tower ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_clip_name(tmp_path_factory) -> str:
    return tiny_open_clip(tmp_path_factory.mktemp("parity_open_clip"))


def text_encoder(open_clip_name: str, num_class_tokens: int) -> OpenCLIPEncoder:
    torch.manual_seed(0)
    encoder = OpenCLIPEncoder(open_clip_name, num_class_tokens=num_class_tokens, load_weights=False)
    perturb(encoder.model, seed=3, scale=0.05)
    assert encoder.text_tower.attn_mask is not None, "the tiny open_clip text tower must be causal"
    return encoder.eval()


def full_length_ids(encoder: OpenCLIPEncoder, texts: list[str], num_class_tokens: int) -> tuple[torch.Tensor, list]:
    """The layout built from open_clip's tokenizer alone, at the full context length: each caption truncated K−1
    tokens early, its EOT followed by K−1 more EOTs, zero padding. Also each row's EOT position."""
    context = encoder.context_length
    tokens = encoder.tokenizer(texts, context_length=context - (num_class_tokens - 1))
    eot = encoder.tokenizer.eot_token_id
    rows, ends = [], []
    for row in tokens.tolist():
        end = row.index(eot)
        ids = row[: end + 1] + [eot] * (num_class_tokens - 1)
        rows.append(ids + [0] * (context - len(ids)))
        ends.append(end)
    return torch.tensor(rows), ends


def encode_text_states(model: nn.Module, text_tower: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The ``ln_final`` output of open_clip's own ``encode_text`` (read by a forward hook), ``(B, context, W)``."""
    states = []
    handle = text_tower.ln_final.register_forward_hook(lambda module, args, output: states.append(output))
    try:
        model.encode_text(input_ids)
    finally:
        handle.remove()
    assert len(states) == 1
    return states[0]


@pytest.mark.parametrize(
    "texts", [SENTENCES, [" ".join(SENTENCES), "a cat"]], ids=["short captions (padding cut)", "a truncated caption"]
)
def test_open_clip_trimmed_text_forward_is_encode_text_on_full_length_input(open_clip_name, texts):
    num_class_tokens = 4
    encoder = text_encoder(open_clip_name, num_class_tokens)
    full, ends = full_length_ids(encoder, texts, num_class_tokens)
    features = encoder.preprocess(texts)
    length = features["input_ids"].shape[1]
    assert torch.equal(features["input_ids"], full[:, :length]) and not full[:, length:].any()
    with torch.no_grad():
        states = encoder(dict(features))["token_embeddings"]
        expected = encode_text_states(encoder.model, encoder.text_tower, full)
    rows = torch.arange(len(texts)).unsqueeze(1)
    positions = torch.tensor(ends).unsqueeze(1) + torch.arange(num_class_tokens)  # EOT and the K−1 class positions
    name = f"open_clip text K={num_class_tokens}, {length}/{encoder.context_length} positions"
    assert max_diff(f"{name}, class positions", states[rows, positions], expected[rows, positions]) <= TOLERANCE
    assert max_diff(f"{name}, every position", states, expected[:, :length]) <= TOLERANCE


def test_open_clip_text_with_one_class_token_is_what_encode_text_projects(open_clip_name):
    encoder = text_encoder(open_clip_name, num_class_tokens=1)
    unprojected = copy.deepcopy(encoder.model)
    unprojected.text_projection = None  # open_clip's encode_text then returns its pooled state itself
    features = encoder.preprocess(SENTENCES)
    with torch.no_grad():
        states = encoder(dict(features))["token_embeddings"]
        expected = unprojected.encode_text(encoder.tokenizer(SENTENCES))
    eot = states[torch.arange(len(SENTENCES)), features["attention_mask"].sum(dim=1) - 1]
    assert max_diff("open_clip text K=1 vs encode_text pooled", eot, expected) <= TOLERANCE
