"""ClassAttention (CaiT's late class tokens): a float64 reference, masks, initialisation from every tower family's last
layers, tracing, and ObliquePooling's class_attention_* options."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import tiny_bert, tiny_clip_uneven, tiny_open_clip, tiny_timm

from st_oblique import ObliquePooling
from st_oblique.modules.class_attention import BlockStyle, ClassAttention
from st_oblique.modules.tower_layers import tower_layers

# --- an independent float64 implementation of CaiT class attention (written from the paper, not from the module) --


def reference_block(block: torch.nn.Module, cls: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None):
    """One class-attention block in float64 with explicit per-head loops: cls ``(B, K, W)``, tokens ``(B, L, W)``,
    mask ``(B, L)`` (1 = real)."""

    def layer_norm(x, norm):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.double() + norm.bias.double()

    def linear(x, layer):
        return x @ layer.weight.double().T + layer.bias.double()

    def gelu(x):
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    batch, k, width = cls.shape
    heads = block.num_heads
    size = width // heads
    z = torch.cat([cls, tokens], dim=1)
    keep = torch.ones(batch, z.shape[1], dtype=torch.bool)
    if mask is not None:
        keep[:, k:] = mask.bool()
    z_in = layer_norm(z, block.norm1) if block.norm_first else z
    q_in = z_in[:, :k]
    q, key, v = linear(q_in, block.query), linear(z_in, block.key), linear(z_in, block.value)
    out = torch.zeros(batch, k, width, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            part = slice(h * size, (h + 1) * size)
            scores = q[b, :, part] @ key[b, :, part].T / math.sqrt(size)
            scores[:, ~keep[b]] = -math.inf
            weights = torch.exp(scores - scores.max(-1, keepdim=True).values)
            weights = weights / weights.sum(-1, keepdim=True)
            out[b, :, part] = weights @ v[b, :, part]
    update = linear(out, block.output)
    if block.norm_first:
        x = cls + update
        return x + linear(gelu(linear(layer_norm(x, block.norm2), block.fc1)), block.fc2)
    x = layer_norm(cls + update, block.norm1)
    return layer_norm(x + linear(gelu(linear(x, block.fc1)), block.fc2), block.norm2)


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random (LayerNorm affine too), so that no part of the reference can pass by accident."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3 + (parameter.ndim == 1) * 0.5)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("width,in_features", [(16, 16), (16, 24)])
def test_matches_float64_reference(norm_first, width, in_features):
    torch.manual_seed(0)
    module = ClassAttention(
        in_features, num_tokens=3, num_layers=2, width=width, num_heads=2, mlp_ratio=2.0,
        style=BlockStyle(norm_first=norm_first, activation="gelu", layer_norm_eps=1e-5),
    ).double()
    randomize(module, seed=1)
    tokens = torch.randn(2, 5, in_features, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    got = module(tokens, mask)

    projected = tokens if width == in_features else module.input_projection(tokens)
    cls = module.class_tokens.unsqueeze(0).expand(2, -1, -1)
    for block in module.blocks:
        cls = reference_block(block, cls, projected, mask)
    if norm_first:
        norm = module.final_norm
        cls = (cls - cls.mean(-1, keepdim=True)) / torch.sqrt(cls.var(-1, unbiased=False, keepdim=True) + norm.eps)
        cls = cls * norm.weight + norm.bias
    assert got.shape == (2, 3, width)
    torch.testing.assert_close(got, cls, rtol=1e-10, atol=1e-10)


def test_padding_is_never_attended():
    torch.manual_seed(0)
    module = ClassAttention(16, num_tokens=4, num_layers=2, width=16, num_heads=2).eval()
    tokens = torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    changed = tokens.clone()
    changed[1, 3:] = torch.randn(3, 16) * 100
    with torch.no_grad():
        assert torch.equal(module(tokens, mask), module(changed, mask))
        # the row alone, unpadded, gives the same class tokens
        torch.testing.assert_close(module(tokens[1:, :3], mask[1:, :3]), module(tokens, mask)[1:], rtol=0, atol=1e-6)
        for maps in module.attention_maps(tokens, mask):
            assert maps.shape == (2, 2, 4, 4 + 6)
            assert torch.equal(maps[1, :, :, 4 + 3 :], torch.zeros(2, 4, 3))
            torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 4))
            assert bool((maps[:, :, :, :4] > 0).all())  # the class tokens attend to each other too


def test_exports_with_dynamic_batch_and_length():
    """The export session exports the forward pass (torch.export, as ONNX's exporter does): one graph for every batch
    size and length, which needs plain torch without Python control flow on tensor values."""
    torch.manual_seed(0)
    module = ClassAttention(24, num_tokens=4, num_layers=2, width=16).eval()
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    exported = torch.export.export(
        module,
        (torch.randn(2, 5, 24), torch.ones(2, 5, dtype=torch.long)),
        dynamic_shapes=({0: batch, 1: length}, {0: batch, 1: length}),
    )
    tokens, mask = torch.randn(3, 9, 24), torch.tensor([[1] * 9, [1] * 4 + [0] * 5, [1] * 7 + [0] * 2])
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(tokens, mask), module(tokens, mask))


# --- initialisation from every tower family's last layers -------------------------------------------------------


def _hf_text_states(model, input_ids):
    output = model(input_ids=input_ids, output_hidden_states=True)
    return output.hidden_states, output.last_hidden_state


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    """``{family: (TowerLayers, layer inputs per layer (1, L, W), final states (1, L, W), class positions)}`` for the
    last two layers of every family: layer inputs[i] enters layer -2+i, whose outputs are outputs[i]."""
    from open_clip import create_model
    from transformers import AutoModel, CLIPModel, TimmWrapperModel

    torch.manual_seed(0)
    found = {}
    bert = AutoModel.from_pretrained(tiny_bert(tmp_path_factory.mktemp("bert"))).eval()
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 3]])
    states = bert(input_ids=ids, output_hidden_states=True).hidden_states
    found["bert"] = (tower_layers(bert, "text", first_token_id=2), states[-3:-1], states[-2:], [0, 3], None)

    clip = CLIPModel.from_pretrained(tiny_clip_uneven(tmp_path_factory.mktemp("clip"))).eval()
    text = clip.text_model(input_ids=torch.tensor([[0, 5, 6, 7, 8]]), output_hidden_states=True).hidden_states
    # causal tower: the last position sees every other one, as a class position after EOS does
    found["hf_clip_text"] = (tower_layers(clip, "text"), text[-3:-1], text[-2:], [4], clip.text_model.final_layer_norm)
    pixels = torch.randn(1, 3, 32, 32)
    vision = clip.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
    found["hf_clip_image"] = (
        tower_layers(clip, "image"), vision[-3:-1], vision[-2:], [0, 5], clip.vision_model.post_layernorm
    )

    timm_model = TimmWrapperModel.from_pretrained(tiny_timm(tmp_path_factory.mktemp("timm"))).eval()
    vit = timm_model.timm_model
    hidden = vit.norm_pre(vit._pos_embed(vit.patch_embed(pixels)))
    layer_states = [hidden]
    for block in vit.blocks:
        layer_states.append(block(layer_states[-1]))
    found["timm_vit"] = (tower_layers(timm_model, "image"), layer_states[-3:-1], layer_states[-2:], [0, 3], vit.norm)

    open_clip_model = create_model(tiny_open_clip(tmp_path_factory.mktemp("open_clip"))).eval()
    for modality, transformer, final, positions, run in (
        ("text", open_clip_model.transformer, open_clip_model.ln_final, [5],
         lambda: open_clip_model.encode_text(torch.tensor([[49406, 320, 1929, 530, 518, 49407] + [0] * 10]))),
        ("image", open_clip_model.visual.transformer, open_clip_model.visual.ln_post, [0, 3],
         lambda: open_clip_model.encode_image(pixels)),
    ):
        inputs, outputs = [], []
        handles = [
            block.register_forward_pre_hook(lambda m, args, kept=inputs: kept.append(args[0]))
            for block in transformer.resblocks
        ]
        handles += [
            block.register_forward_hook(lambda m, args, out, kept=outputs: kept.append(out))
            for block in transformer.resblocks
        ]
        run()
        for handle in handles:
            handle.remove()
        if modality == "text":  # encode_text runs the whole 16-token context; causal: the caption's states are its own
            inputs, outputs = [x[:, :6] for x in inputs], [x[:, :6] for x in outputs]
        found[f"open_clip_{modality}"] = (tower_layers(open_clip_model, modality), inputs[-2:], outputs[-2:],
                                          positions, final)
    return found


FAMILIES = ["bert", "hf_clip_text", "hf_clip_image", "timm_vit", "open_clip_text", "open_clip_image"]


@pytest.mark.parametrize("family", FAMILIES)
def test_initialisation_reproduces_the_last_layers_at_class_positions(towers, family):
    """Given the hidden states entering a layer and class tokens equal to that layer's inputs at K of its positions,
    the block copied from it gives the layer's outputs at those positions (each of the last two layers)."""
    tower, inputs, outputs, positions, _ = towers[family]
    assert tower is not None, family
    module = ClassAttention(
        tower.width, num_tokens=len(positions), num_layers=2, width=tower.width, num_heads=tower.num_heads,
        mlp_ratio=tower.hidden_width / tower.width, style=tower.style,
    )
    message = module.initialize_from_tower(tower)
    assert "the 2 blocks copy the tower's last 2 layers" in message
    for block, entering, leaving in zip(module.blocks, inputs, outputs, strict=True):
        others = [i for i in range(entering.shape[1]) if i not in positions]
        with torch.no_grad():
            got = block(entering[:, positions], entering[:, others], None)
        torch.testing.assert_close(got, leaving[:, positions], rtol=0, atol=2e-5)
        # and it is the layer, not any layer: the other block's weights give something else
        other = module.blocks[1] if block is module.blocks[0] else module.blocks[0]
        with torch.no_grad():
            assert (other(entering[:, positions], entering[:, others], None) - leaving[:, positions]).abs().max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_one_block_with_the_final_norm_gives_the_towers_output(towers, family):
    """A 1-block head at the tower's width, class tokens set to the last layer's inputs at K positions: its output is
    the tower's final state there (the final LayerNorm copied for pre-norm towers)."""
    tower, inputs, outputs, positions, final = towers[family]
    module = ClassAttention(
        tower.width, num_tokens=len(positions), num_layers=1, width=tower.width, num_heads=tower.num_heads,
        mlp_ratio=tower.hidden_width / tower.width, style=tower.style,
    )
    module.initialize_from_tower(tower)
    entering, leaving = inputs[-1], outputs[-1]
    expected = leaving if final is None else final(leaving)
    others = [i for i in range(entering.shape[1]) if i not in positions]
    with torch.no_grad():
        module.class_tokens.copy_(entering[0, positions])
        torch.testing.assert_close(module(entering[:, others]), expected[:, positions], rtol=0, atol=2e-5)


def test_class_tokens_start_from_the_towers_own(towers):
    bert = towers["bert"][0]
    tokens = bert.class_tokens(4)
    assert tokens.shape == (4, bert.width) and len({tuple(t.tolist()) for t in tokens}) == 4  # position embeddings
    vit = towers["hf_clip_image"][0].class_tokens(4)
    assert torch.equal(vit[0], vit[0]) and 0 < (vit[1:] - vit[0]).abs().max() < 0.2 * vit[0].abs().max()
    assert towers["hf_clip_text"][0].class_tokens(4) is None  # a causal tower has no class token to copy


def test_what_does_not_fit_stays_random(towers):
    tower = towers["bert"][0]
    narrow = ClassAttention(tower.width, num_tokens=2, width=16, style=tower.style)
    before = {name: value.clone() for name, value in narrow.state_dict().items()}
    assert "width 16 differs from the tower's 32" in narrow.initialize_from_tower(tower)
    assert all(torch.equal(before[name], value) for name, value in narrow.state_dict().items())
    deep = ClassAttention(tower.width, num_tokens=2, num_layers=3, width=tower.width, num_heads=tower.num_heads,
                          mlp_ratio=2.0, style=tower.style)
    message = deep.initialize_from_tower(tower)
    assert "the blocks are random (they need 3 layers" in message and "class tokens start as" in message
    assert "no tower layers" in ClassAttention(8, num_tokens=2).initialize_from_tower(None)


def test_families_without_layers_to_copy(tmp_path):
    from transformers import TimmWrapperModel

    cnn = TimmWrapperModel.from_pretrained(tiny_timm(tmp_path / "cnn", "test_efficientnet"))
    assert tower_layers(cnn, "image") is None
    assert tower_layers(torch.nn.Linear(2, 2), "text") is None


# --- ObliquePooling options ---------------------------------------------------------------------------------------


def test_pooling_saves_the_resolved_options_and_loads_them(tmp_path):
    pooling = ObliquePooling(
        {"text": 384, "image": 768},
        num_tokens=16,
        token_dim=32,
        token_source="class_attention",
        class_attention_width={"text": 128, "image": 192},
        class_attention_style={"text": {"norm_first": False, "activation": "gelu", "layer_norm_eps": 1e-12},
                               "image": {"norm_first": True, "activation": "quick_gelu", "layer_norm_eps": 1e-5}},
    )
    config = pooling.get_config_dict()
    assert config["class_attention_layers"] == 2 and config["class_attention_mlp_ratio"] == 4.0
    assert config["class_attention_width"] == {"text": 128, "image": 192}
    assert config["class_attention_heads"] == 4  # heads of at least 32 for both widths: saved once
    assert pooling.heads["text"].projection.shape == (16, 128, 32)
    assert pooling.heads["image"].class_attention.blocks[0].norm_first
    pooling.save(str(tmp_path))
    loaded = ObliquePooling.load(str(tmp_path))
    features = {"token_embeddings": torch.randn(2, 5, 768), "modality": "image"}
    with torch.no_grad():
        assert torch.equal(pooling.eval()(dict(features))["sentence_embedding"],
                           loaded.eval()(dict(features))["sentence_embedding"])


def test_pooling_refuses_bad_options():
    with pytest.raises(ValueError, match=r"class_attention_heads=3 must divide the class-attention width 128"):
        ObliquePooling(384, num_tokens=4, token_source="class_attention", class_attention_heads=3)
    with pytest.raises(ValueError, match="activation must be one of"):
        ObliquePooling(384, num_tokens=4, token_source="class_attention", class_attention_style={"activation": "tanh"})
    with pytest.raises(ValueError, match="num_layers must be a positive whole number"):
        ObliquePooling(384, num_tokens=4, token_source="class_attention", class_attention_layers=0)
    with pytest.raises(ValueError, match=r"class_attention_width is given for \['image'\] but not for the 'text' head"):
        ObliquePooling({"text": 8, "image": 8}, token_source="class_attention", class_attention_width={"image": 8})
    with pytest.raises(ValueError, match="expects inputs of width 384"):
        ObliquePooling(384, num_tokens=4, token_source="class_attention")({"token_embeddings": torch.randn(1, 3, 128)})
