"""OpenCLIPEncoder / st_oblique.oblique_open_clip: any open_clip model with K class tokens, offline."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from tiny_models import (
    SENTENCES,
    TINY_OPEN_CLIP_CONFIG,
    assert_class_tokens_see_their_input,
    tiny_image_caption_dataset,
    tiny_images,
    tiny_open_clip,
    train_steps,
)

import st_oblique
from st_oblique import ObliqueLoadError, manifold
from st_oblique.modules import OpenCLIPEncoder

K, D = 4, 8
TINY_RESNET = {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16}


@pytest.fixture(scope="module")
def model_name(tmp_path_factory) -> str:
    return tiny_open_clip(tmp_path_factory.mktemp("open_clip_configs"))


@pytest.fixture(scope="module")
def oblique(model_name):
    torch.manual_seed(0)
    return st_oblique.oblique_open_clip(model_name, num_tokens=K, token_dim=D, device="cpu")



def test_one_class_token_reproduces_open_clip(model_name):
    torch.manual_seed(0)
    model = st_oblique.oblique_open_clip(model_name, num_tokens=1, token_dim=16, device="cpu")
    clip = model[0].model.eval()
    _, _, transform = open_clip.create_model_and_transforms(model_name)
    tokenizer = open_clip.get_tokenizer(model_name)
    images = tiny_images(3)
    pixel_values = torch.stack([transform(image) for image in images])
    with torch.no_grad():
        image_features = clip.encode_image(pixel_values)
        text_features = clip.encode_text(tokenizer(SENTENCES))
        # Before projection: the class states are what open_clip projects.
        states = model[0]({"pixel_values": pixel_values, "modality": "image"})["token_embeddings"]
    torch.testing.assert_close(states[:, 0] @ clip.visual.proj, image_features)
    torch.testing.assert_close(model.encode(images, convert_to_tensor=True), F.normalize(image_features, dim=-1))
    torch.testing.assert_close(
        model.encode(SENTENCES, convert_to_tensor=True), F.normalize(text_features, dim=-1), atol=1e-5, rtol=1e-5
    )


def test_text_class_positions_follow_the_eot(oblique):
    encoder = oblique[0]
    eot = encoder.tokenizer.eot_token_id
    plain = encoder.tokenizer(SENTENCES[:3])
    features = oblique.preprocess(SENTENCES[:3])
    lengths = (plain == eot).int().argmax(dim=1) + 1
    # Padding after the last class position is cut: a causal tower's earlier states cannot see it.
    assert features["input_ids"].shape == (3, int(lengths.max()) + K - 1)
    for row, length in enumerate(lengths.tolist()):
        ids, mask = features["input_ids"][row], features["attention_mask"][row]
        assert ids[:length].tolist() == plain[row, :length].tolist()
        assert ids[length : length + K - 1].tolist() == [eot] * (K - 1)
        assert mask.tolist() == [1] * (length + K - 1) + [0] * (len(mask) - length - K + 1)

    long_caption = oblique.preprocess([" ".join(SENTENCES)])
    assert long_caption["input_ids"].shape[1] == encoder.context_length
    assert long_caption["input_ids"][0, -K:].tolist() == [eot] * K
    assert encoder.max_seq_length == TINY_OPEN_CLIP_CONFIG["text_cfg"]["context_length"] - (K - 1)
    oblique.max_seq_length = 5
    try:
        assert oblique.preprocess([" ".join(SENTENCES)])["input_ids"].shape[1] == 5 + K - 1
    finally:
        oblique.max_seq_length = None


def test_every_class_token_depends_on_the_whole_input(oblique):
    assert_class_tokens_see_their_input(oblique, patch_box=(24, 24, 32, 32), num_tokens=K)  # 8 px patches
    embeddings = oblique.encode(tiny_images(3), convert_to_tensor=True)
    assert embeddings.shape == (3, K * D) and manifold.is_on_manifold(embeddings, num_tokens=K)


def test_native_module_interface(oblique, model_name):
    encoder = oblique[0]
    assert encoder.modalities == ["text", "image"]
    assert encoder.embedding_dimensions == {"text": 32, "image": 32}
    assert oblique.get_embedding_dimension() == K * D and oblique.similarity_fn_name == "dot"
    assert repr(encoder).startswith(f"OpenCLIPEncoder({{'model_name': '{model_name}'")
    assert set(encoder.class_token_placement) == {"text", "image"} and "EOT" in encoder.class_token_placement["text"]
    frozen = {name for name, p in encoder.named_parameters() if not p.requires_grad}
    assert frozen == {"model.logit_scale", "model.text_projection", "model.visual.proj"}
    with pytest.raises(ValueError, match="mixes multiple modalities"):
        oblique.encode([tiny_images(1)[0], "a caption"])
    with pytest.raises(ValueError, match=r"model_kwargs \['force_quick_gelu'\] cannot be used.*config_kwargs"):
        OpenCLIPEncoder(model_name, model_kwargs={"force_quick_gelu": True})


def test_save_and_load_offline(oblique, tmp_path):
    oblique.save(str(tmp_path))
    images = tiny_images(3)
    for loaded in (st_oblique.load(str(tmp_path), device="cpu"), SentenceTransformer(str(tmp_path), trust_remote_code=True)):
        assert isinstance(loaded[0], OpenCLIPEncoder) and loaded[0].num_class_tokens == K
        assert (loaded[0].model_name, loaded[0].pretrained) == (oblique[0].model_name, None)
        for inputs in (images, SENTENCES):
            torch.testing.assert_close(
                loaded.encode(inputs, convert_to_tensor=True),
                oblique.encode(inputs, convert_to_tensor=True),
                atol=1e-6,
                rtol=0,
            )
    # The backbone is saved in open_clip's own layout: stock open_clip loads it.
    backbone = open_clip.create_model(f"local-dir:{tmp_path}")
    for name, value in oblique[0].model.state_dict().items():
        torch.testing.assert_close(backbone.state_dict()[name], value)
    # ... and a saved folder is a starting point for a new oblique model (a new head and new class tokens).
    rebuilt = st_oblique.oblique_open_clip(str(tmp_path), num_tokens=2, token_dim=D, device="cpu")
    assert rebuilt[0].model_name == f"local-dir:{tmp_path}"
    torch.testing.assert_close(rebuilt[0].model.visual.conv1.weight, oblique[0].model.visual.conv1.weight)


def test_damaged_files_are_named(oblique, tmp_path):
    oblique.save(str(tmp_path))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ObliqueLoadError, match=r"model\.safetensors is not a readable safetensors file"):
        st_oblique.load(str(tmp_path))
    (tmp_path / "open_clip_config.json").write_text("{not json")
    with pytest.raises(ObliqueLoadError, match=r"open_clip_config\.json is not valid JSON"):
        st_oblique.load(str(tmp_path))


def test_config_overrides_and_cnn_towers(model_name, tmp_path):
    # A ResNet image tower (open_clip's ModifiedResNet) has no class token: K attention queries over its map.
    model = st_oblique.oblique_open_clip(
        model_name, num_tokens=K, token_dim=D, model_kwargs={"vision_cfg": TINY_RESNET}, device="cpu"
    )
    assert type(model[0].model.visual).__name__ == "ModifiedResNet"
    assert model[0].image_token_source == "attention" and model[1].token_source["image"] == "attention"
    assert model[0].extra_class_tokens is None
    images = tiny_images(3)
    embeddings = model.encode(images, convert_to_tensor=True)
    assert embeddings.shape == (3, K * D) and manifold.is_on_manifold(embeddings, num_tokens=K)
    model.save(str(tmp_path))
    loaded = st_oblique.load(str(tmp_path), device="cpu")
    assert loaded[0].model_cfg["vision_cfg"] == TINY_RESNET
    torch.testing.assert_close(loaded.encode(images, convert_to_tensor=True), embeddings, atol=1e-6, rtol=0)


def test_trainer_updates_every_used_parameter(model_name, tmp_path):
    torch.manual_seed(0)
    model = st_oblique.oblique_open_clip(model_name, num_tokens=K, token_dim=D, device="cpu")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_steps(model, tiny_image_caption_dataset(8), tmp_path, steps=2)
    after = dict(model.named_parameters())
    changed = {name for name, value in before.items() if not torch.equal(value, after[name])}
    assert changed == trainable
    assert "0.extra_class_tokens.tokens" in changed
