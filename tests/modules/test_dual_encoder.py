"""st_oblique.oblique_dual_encoder: a text tower and an image tower (timm ViT or CNN) behind a ModalityRouter."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer
from tiny_models import (
    SENTENCES,
    assert_class_tokens_see_their_input,
    tiny_image_caption_dataset,
    tiny_images,
    tiny_timm,
    train_steps,
)
from transformers import TimmWrapperModel

import st_oblique
from st_oblique import manifold
from st_oblique.modules import ClassTokenTransformer, ImageClassTokenTransformer, ModalityRouter

K, D = 4, 8


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> str:
    return tiny_timm(tmp_path_factory.mktemp("tiny_timm_vit"), "test_vit", image_size=32)


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory) -> str:
    return tiny_timm(tmp_path_factory.mktemp("tiny_timm_cnn"), "test_efficientnet", image_size=64)


@pytest.fixture(scope="module")
def vit_model(tiny_bert_dir, vit_dir):
    torch.manual_seed(0)
    return st_oblique.oblique_dual_encoder(tiny_bert_dir, vit_dir, num_tokens=K, token_dim=D, device="cpu")



def test_structure(vit_model):
    router, pooling = vit_model[0], vit_model[1]
    assert isinstance(router, ModalityRouter) and set(router.sub_modules) == {"text", "image"}
    text, image = router.sub_modules["text"][0], router.sub_modules["image"][0]
    assert isinstance(text, ClassTokenTransformer) and text.num_class_tokens == K
    assert isinstance(image, ImageClassTokenTransformer) and image.num_class_tokens == K
    assert pooling.token_source == {"text": "first", "image": "first"}
    assert pooling.in_features == {"text": 32, "image": 64}
    assert set(router.class_token_placement) == {"text", "image"} and str(K) in router.class_token_placement["image"]


def test_vit_class_tokens(vit_dir, vit_model):
    images = tiny_images(3)
    one = ImageClassTokenTransformer(vit_dir, num_class_tokens=1)
    features = one.preprocess(images)
    timm_model = TimmWrapperModel.from_pretrained(vit_dir).timm_model.eval()
    with torch.no_grad():
        expected = timm_model.forward_features(features["pixel_values"])
        torch.testing.assert_close(one(features)["token_embeddings"], expected)  # K=1: timm's own states
        tokens = vit_model[0].sub_modules["image"][0](dict(features))["token_embeddings"]
    assert tokens.shape == (3, K + expected.shape[1] - 1, 64)

    assert_class_tokens_see_their_input(vit_model, patch_box=(16, 16, 32, 32), num_tokens=K)  # 16 px patches
    embeddings = vit_model.encode(images, convert_to_tensor=True)
    assert embeddings.shape == (3, K * D) and manifold.is_on_manifold(embeddings, num_tokens=K)


def test_cnn_tower_is_pooled_by_attention(tiny_bert_dir, cnn_dir, tmp_path):
    torch.manual_seed(0)
    model = st_oblique.oblique_dual_encoder(tiny_bert_dir, cnn_dir, num_tokens=K, token_dim=D, device="cpu")
    image = model[0].sub_modules["image"][0]
    assert image.image_token_source == "attention" and image.num_class_tokens == 1
    assert model[1].token_source["image"] == "attention"
    states = image(image.preprocess(tiny_images(2)))["token_embeddings"]
    assert states.shape == (2, 4, 256)  # a 2x2 feature map of 256 channels, flattened to tokens
    # Stock ST fails on grayscale and RGBA images with timm models; they are converted to RGB here.
    images = [tiny_images(1)[0].convert("L"), tiny_images(1)[0].convert("RGBA"), *tiny_images(2)]
    embeddings = model.encode(images, convert_to_tensor=True)
    assert embeddings.shape == (4, K * D) and manifold.is_on_manifold(embeddings, num_tokens=K)

    model.save(str(tmp_path))
    loaded = st_oblique.load(str(tmp_path), device="cpu")
    torch.testing.assert_close(loaded.encode(images, convert_to_tensor=True), embeddings, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no ViT class token"):
        ImageClassTokenTransformer(cnn_dir, num_class_tokens=K)


def test_save_and_load(vit_model, tmp_path):
    vit_model.save(str(tmp_path))
    assert (tmp_path / "image_0_ImageClassTokenTransformer" / "oblique_class_tokens" / "model.safetensors").exists()
    for loaded in (st_oblique.load(str(tmp_path), device="cpu"), SentenceTransformer(str(tmp_path), trust_remote_code=True)):
        assert isinstance(loaded[0], ModalityRouter)
        for inputs in (tiny_images(3), SENTENCES):
            torch.testing.assert_close(
                loaded.encode(inputs, convert_to_tensor=True),
                vit_model.encode(inputs, convert_to_tensor=True),
                atol=1e-6,
                rtol=0,
            )
    # The image tower's checkpoint is stock: transformers loads it.
    TimmWrapperModel.from_pretrained(str(tmp_path / "image_0_ImageClassTokenTransformer"))


def test_inputs_are_routed_by_modality(vit_model, tiny_bert_dir):
    image = tiny_images(1)[0]
    torch.testing.assert_close(
        vit_model.encode([{"image": image}], convert_to_tensor=True), vit_model.encode([image], convert_to_tensor=True)
    )
    queries = vit_model.encode_query(SENTENCES[:2], convert_to_tensor=True)  # a task does not change the route
    torch.testing.assert_close(queries, vit_model.encode(SENTENCES[:2], convert_to_tensor=True))
    with pytest.raises(ValueError, match="mixes multiple modalities"):
        vit_model.encode([image, "a caption"])
    with pytest.raises(ValueError, match="not an image model"):
        ImageClassTokenTransformer(tiny_bert_dir)
    with pytest.raises(ValueError, match="routes 'text' and/or 'image'"):
        ModalityRouter({"query": [vit_model[0].sub_modules["text"][0]]})


def test_trainer_needs_no_router_mapping(tiny_bert_dir, vit_dir, tmp_path):
    torch.manual_seed(0)
    model = st_oblique.oblique_dual_encoder(tiny_bert_dir, vit_dir, num_tokens=K, token_dim=D, device="cpu")
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    train_steps(model, tiny_image_caption_dataset(8), tmp_path, steps=2)
    after = dict(model.named_parameters())
    unchanged = {name for name, value in before.items() if torch.equal(value, after[name])}
    # BERT's pooler is not used by Sentence Transformers (token states are): it gets no gradient.
    assert unchanged == {"0.sub_modules.text.0.model.pooler.dense.weight", "0.sub_modules.text.0.model.pooler.dense.bias"}
    assert "0.sub_modules.image.0.extra_class_tokens.tokens" in before
