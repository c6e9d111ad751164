"""token_source="class_attention" through every builder and tower family: the trunk is the plain tower (bit-identical
token states, no class token added), the K class tokens join after it, padding (and in causal text towers anything
after EOS) is never attended, and the models save, load and truncate like every oblique model."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer
from tiny_models import SENTENCES, tiny_clip_uneven, tiny_images, tiny_open_clip, tiny_timm
from transformers import AutoModel, CLIPModel, TimmWrapperModel

import st_oblique
from st_oblique import manifold

K, D = 4, 8


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_bert_dir):
    return {
        "bert": tiny_bert_dir,
        "clip": tiny_clip_uneven(tmp_path_factory.mktemp("clip")),
        "open_clip": tiny_open_clip(tmp_path_factory.mktemp("open_clip")),
        "vit": tiny_timm(tmp_path_factory.mktemp("vit"), "test_vit", image_size=32),
        "cnn": tiny_timm(tmp_path_factory.mktemp("cnn"), "test_efficientnet", image_size=64),
    }


def build(family: str, folders: dict, **options):
    torch.manual_seed(0)
    if family == "text":
        return st_oblique.oblique_text_model(folders["bert"], num_tokens=K, token_dim=D, **options)
    if family == "clip":
        return st_oblique.oblique_clip(folders["clip"], num_tokens=K, token_dim=D, **options)
    if family == "open_clip":
        return st_oblique.oblique_open_clip(folders["open_clip"], num_tokens=K, token_dim=D, **options)
    image = folders["vit" if family == "dual_vit" else "cnn"]
    source = options.pop("token_source", None)
    sources = {} if source is None else {"text_token_source": source, "image_token_source": source}
    return st_oblique.oblique_dual_encoder(folders["bert"], image, num_tokens=K, token_dim=D, **sources, **options)


FAMILIES = ["text", "clip", "open_clip", "dual_vit", "dual_cnn"]
LATE = {"token_source": "class_attention"}


def modalities(family: str) -> list[str]:
    return ["text"] if family == "text" else ["text", "image"]


def inputs_of(modality: str) -> list:
    return SENTENCES[:5] if modality == "text" else tiny_images(3)


def trunk(model, inputs) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    features = model.preprocess(inputs)
    model.eval()
    with torch.no_grad():
        out = model[0](dict(features))
    return out["token_embeddings"], out.get("attention_mask"), features


@pytest.mark.parametrize("family", FAMILIES)
def test_the_trunk_is_the_plain_tower(family, folders):
    """Bit-identical token states (same positions, same values) to the model without class tokens in its towers."""
    late = build(family, folders, **LATE)
    if family in ("clip", "open_clip"):  # K=1 keeps CLIP's towers exactly as they are
        builder = st_oblique.oblique_clip if family == "clip" else st_oblique.oblique_open_clip
        torch.manual_seed(0)  # open_clip draws its random weights when the model is built
        plain = builder(folders[family], num_tokens=1, token_dim=D)
    else:  # the "attention" head leaves the towers unchanged
        plain = build(family, folders, token_source="attention")
    pooling = late[1]
    for modality in modalities(family):
        assert pooling.heads[modality if len(pooling.heads) > 1 else "default"].token_source == "class_attention"
        inputs = inputs_of(modality)
        late_states, late_mask, late_features = trunk(late, inputs)
        plain_states, plain_mask, plain_features = trunk(plain, inputs)
        if modality == "text":
            assert torch.equal(late_features["input_ids"], plain_features["input_ids"])  # no class positions added
            assert torch.equal(late_mask, plain_mask)
        assert torch.equal(late_states, plain_states), (family, modality)


def test_the_trunk_is_the_hugging_face_model(folders):
    """And the plain tower is the library's own forward pass: BERT's last_hidden_state, CLIP's two towers, timm's."""
    text = build("text", folders, **LATE)
    states, _, features = trunk(text, SENTENCES[:5])
    bert = AutoModel.from_pretrained(folders["bert"]).eval()
    with torch.no_grad():
        expected = bert(input_ids=features["input_ids"], attention_mask=features["attention_mask"]).last_hidden_state
    torch.testing.assert_close(states, expected, rtol=0, atol=1e-6)

    clip_model = build("clip", folders, **LATE)
    clip = CLIPModel.from_pretrained(folders["clip"]).eval()
    states, _, features = trunk(clip_model, SENTENCES[:5])
    with torch.no_grad():
        expected = clip.text_model(input_ids=features["input_ids"], attention_mask=features["attention_mask"])
    torch.testing.assert_close(states, expected.last_hidden_state, rtol=0, atol=1e-6)
    states, _, features = trunk(clip_model, tiny_images(2))
    with torch.no_grad():
        expected = clip.vision_model.post_layernorm(clip.vision_model(features["pixel_values"]).last_hidden_state)
    assert states.shape[1] == 1 + 16  # CLIP's class token and 16 patches: no class token added
    torch.testing.assert_close(states, expected, rtol=0, atol=1e-6)

    dual = build("dual_vit", folders, **LATE)
    states, _, features = trunk(dual, tiny_images(2))
    vit = TimmWrapperModel.from_pretrained(folders["vit"]).timm_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(states, vit.forward_features(features["pixel_values"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_save_load_and_truncation(family, folders, tmp_path):
    model = build(family, folders, **LATE)
    model.eval()
    saved = tmp_path / "model"
    model.save(str(saved))
    loaded = st_oblique.load(str(saved), device="cpu")
    truncated = st_oblique.load(str(saved), device="cpu", truncate_dim=2 * D)
    assert loaded[1].get_config_dict() == model[1].get_config_dict()
    for modality in modalities(family):
        inputs = inputs_of(modality)
        embeddings = model.encode(inputs, convert_to_tensor=True)
        assert embeddings.shape == (len(inputs), K * D)
        assert manifold.is_on_manifold(embeddings, num_tokens=K)
        assert torch.equal(loaded.encode(inputs, convert_to_tensor=True), embeddings)
        kept = truncated.encode(inputs, convert_to_tensor=True)
        assert torch.equal(kept, embeddings[:, : 2 * D])  # whole tokens, not renormalized


@pytest.mark.parametrize("family", ["text", "clip", "open_clip"])
def test_padding_and_positions_after_eos_are_never_attended(family, folders):
    """A caption alone and inside a batch with longer ones (padding after its end) gets the same embedding, and the
    class tokens' attention maps are zero on every position after the last real one (EOS/EOT in causal towers)."""
    model = build(family, folders, **LATE).eval()
    captions = ["a dog", "a man plays the guitar on the street with two dogs and a cat in the park"]
    alone = model.encode(captions[:1], convert_to_tensor=True)
    batched = model.encode(captions, convert_to_tensor=True)
    torch.testing.assert_close(batched[:1], alone, rtol=0, atol=1e-5)

    states, mask, features = trunk(model, captions)
    assert mask is not None and int(mask[0].sum()) < mask.shape[1]
    end = int(mask[0].sum())  # right padding: real positions are the first `end`
    assert bool(mask[0, :end].all()) and not bool(mask[0, end:].any())
    ids = features["input_ids"][0]
    if family == "clip":
        eos = model[0].tokenizer.eos_token_id
        assert int(ids[end - 1]) == eos  # the last position attended is the caption's EOS
    if family == "open_clip":
        assert int(ids[end - 1]) == int(ids.max())  # open_clip's EOT has the largest id
    head = model[1].heads["text" if family != "text" else "default"]
    with torch.no_grad():
        for maps in head.class_attention.attention_maps(states, mask):
            assert maps.shape[-2:] == (K, K + states.shape[1])
            assert torch.equal(maps[0, :, :, K + end :], torch.zeros_like(maps[0, :, :, K + end :]))
            assert bool((maps[0, :, :, K : K + end] > 0).all())


def test_full_width_starts_from_the_towers_last_layers(folders):
    """At the tower's width the head's blocks are copies of the tower's last layers (MLP ratio and heads follow)."""
    model = build("text", folders, token_source="class_attention", class_attention_width=32, class_attention_layers=1)
    bert = AutoModel.from_pretrained(folders["bert"])
    block = model[1].heads["default"].class_attention.blocks[0]
    last = bert.encoder.layer[-1]
    assert torch.equal(block.query.weight, last.attention.self.query.weight)
    assert torch.equal(block.fc2.weight, last.output.dense.weight)
    assert torch.equal(block.norm2.weight, last.output.LayerNorm.weight) and not block.norm_first
    config = model[1].get_config_dict()
    assert config["class_attention_heads"] == 2 and config["class_attention_mlp_ratio"] == 2.0

    clip = build("clip", folders, token_source="class_attention", class_attention_width=None)
    # default width 128 is capped at the towers' widths (32 and 48): both copy their towers, the heads start from
    # CLIP's projections
    clip_model = CLIPModel.from_pretrained(folders["clip"])
    image_head = clip[1].heads["image"]
    assert torch.equal(image_head.class_attention.final_norm.weight, clip_model.vision_model.post_layernorm.weight)
    assert torch.equal(image_head.projection[0], clip_model.visual_projection.weight.T[:, :D])


def test_builders_refuse_unknown_sources(folders):
    with pytest.raises(ValueError, match=r"oblique_clip takes token_source=None .* or 'class_attention'"):
        st_oblique.oblique_clip(folders["clip"], num_tokens=K, token_dim=D, token_source="first")


def test_a_plain_sentence_transformer_loads_it(folders, tmp_path):
    model = build("text", folders, **LATE)
    model.save(str(tmp_path))
    loaded = SentenceTransformer(str(tmp_path), trust_remote_code=True, device="cpu")
    assert torch.equal(
        loaded.encode(SENTENCES, convert_to_tensor=True), model.encode(SENTENCES, convert_to_tensor=True)
    )


@pytest.mark.parametrize("family,grid", [("clip", (4, 4)), ("dual_cnn", (2, 2)), ("dual_vit", (2, 2))])
def test_explain_draws_the_late_class_tokens_attention(family, folders, grid):
    """Each late class token's last-block attention over the patches (a ViT's own class token left out)."""
    from st_oblique.diagnostics.explanations import token_attention_maps

    model = build(family, folders, **LATE).eval()
    image = tiny_images(1, size=(64, 64))[0]
    maps = token_attention_maps(model, image)
    assert maps.shape == (K, *grid)
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(K))
    states, _, _ = trunk(model, [image])
    head = model[1].heads["image"].class_attention
    with torch.no_grad():
        weights = head.attention_maps(states)[-1].mean(dim=1)[0]  # (K, K + L)
    prefix = K + (states.shape[1] - grid[0] * grid[1])  # class tokens, then the ViT's own class token if any
    expected = weights[:, prefix:] / weights[:, prefix:].sum(-1, keepdim=True)
    torch.testing.assert_close(maps.reshape(K, -1), expected)


def test_info_and_card_describe_the_late_class_tokens(folders):
    from st_oblique.model.description import describe_model

    description = describe_model(build("dual_cnn", folders, **LATE))
    towers = {tower.modality: tower for tower in description.towers}
    assert {tower.token_source for tower in towers.values()} == {"class_attention"}
    assert towers["text"].class_token_placement.startswith(f"{K} class tokens that join after the unchanged tower: 2")
    assert "width 128, the tower's 256-wide states projected down to it" in towers["image"].class_token_placement
    assert "post-norm" in towers["text"].class_token_placement and "pre-norm" in towers["image"].class_token_placement
    assert "token_source='class_attention'" in description.to_text()
