"""CLIPClassTokenTransformer / st_oblique.oblique_clip: K class tokens in both towers of a Hugging Face CLIP."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from tiny_models import (
    SENTENCES,
    assert_class_tokens_see_their_input,
    tiny_clip_uneven,
    tiny_image_caption_dataset,
    tiny_images,
    train_steps,
)
from transformers import CLIPModel, CLIPProcessor

import st_oblique
from st_oblique import ObliqueLoadError, manifold
from st_oblique.modules import CLIPClassTokenTransformer

K, D = 4, 8


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    return tiny_clip_uneven(tmp_path_factory.mktemp("tiny_clip_uneven"))


@pytest.fixture(scope="module")
def stock(clip_dir):
    return CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)


@pytest.fixture(scope="module")
def oblique(clip_dir):
    torch.manual_seed(0)
    return st_oblique.oblique_clip(clip_dir, num_tokens=K, token_dim=D, device="cpu")



def test_one_class_token_reproduces_clip(clip_dir, stock):
    clip, processor = stock
    images = tiny_images(3)
    with torch.no_grad():
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
        text_inputs = processor.tokenizer(SENTENCES, padding=True, return_tensors="pt")
        image_features = clip.get_image_features(pixel_values=pixel_values).pooler_output
        text_features = clip.get_text_features(**text_inputs).pooler_output
        pooled_image = clip.vision_model(pixel_values=pixel_values).pooler_output
        pooled_text = clip.text_model(**text_inputs).pooler_output

    # Before projection: the class states are what CLIP projects.
    module = CLIPClassTokenTransformer(clip_dir, num_class_tokens=1)
    image_states = module(module.preprocess(images))["token_embeddings"]
    torch.testing.assert_close(image_states[:, 0], pooled_image, atol=1e-5, rtol=1e-5)
    features = module(module.preprocess(SENTENCES))
    last = features["attention_mask"].sum(dim=1) - 1
    torch.testing.assert_close(features["token_embeddings"][torch.arange(len(SENTENCES)), last], pooled_text)

    # Whole model, heads started from CLIP's projections: CLIP's normalised embeddings.
    model = st_oblique.oblique_clip(clip_dir, num_tokens=1, token_dim=16, device="cpu")
    torch.testing.assert_close(model.encode(images, convert_to_tensor=True), F.normalize(image_features, dim=-1))
    torch.testing.assert_close(model.encode(SENTENCES, convert_to_tensor=True), F.normalize(text_features, dim=-1))


def test_text_class_positions_follow_the_eos(oblique):
    module = oblique[0]
    eos = module.tokenizer.eos_token_id
    plain = module.tokenizer(SENTENCES[:3], padding=True, return_tensors="pt")
    features = oblique.preprocess(SENTENCES[:3])
    lengths = plain["attention_mask"].sum(dim=1)
    assert features["input_ids"].shape == (3, plain["input_ids"].shape[1] + K - 1)
    for row, length in enumerate(lengths.tolist()):
        ids, mask = features["input_ids"][row], features["attention_mask"][row]
        assert ids[:length].tolist() == plain["input_ids"][row, :length].tolist()
        assert ids[length : length + K - 1].tolist() == [eos] * (K - 1)
        assert mask.tolist() == [1] * (length + K - 1) + [0] * (len(mask) - length - K + 1)


def test_every_class_token_depends_on_the_whole_input(oblique):
    assert_class_tokens_see_their_input(oblique, patch_box=(24, 24, 32, 32), num_tokens=K)  # 8 px patches


def test_shapes_norms_and_similarity(oblique):
    images = oblique.encode(tiny_images(3), convert_to_tensor=True)
    texts = oblique.encode(SENTENCES, convert_to_tensor=True)
    assert images.shape == (3, K * D) and texts.shape == (len(SENTENCES), K * D)
    assert manifold.is_on_manifold(images, num_tokens=K) and manifold.is_on_manifold(texts, num_tokens=K)
    assert oblique.similarity_fn_name == "dot"
    scores = oblique.similarity(images, texts)
    torch.testing.assert_close(scores, manifold.similarity(manifold.to_tokens(images, K), manifold.to_tokens(texts, K)))


def test_long_captions_fit_the_position_table(oblique):
    long_caption = " ".join(SENTENCES)
    features = oblique.preprocess([long_caption, "a cat"])
    limit = oblique[0].max_position_embeddings
    assert features["input_ids"].shape[1] == limit
    assert features["input_ids"][0, -K:].tolist() == [oblique[0].tokenizer.eos_token_id] * K
    assert oblique.encode([long_caption]).shape == (1, K * D)


def test_too_many_class_tokens_are_refused(clip_dir):
    with pytest.raises(ValueError, match="does not fit"):
        CLIPClassTokenTransformer(clip_dir, num_class_tokens=32)


def test_save_and_load(oblique, tmp_path):
    oblique.save(str(tmp_path))
    images, texts = tiny_images(3), SENTENCES
    expected = oblique.encode(images, convert_to_tensor=True), oblique.encode(texts, convert_to_tensor=True)
    for loaded in (st_oblique.load(str(tmp_path), device="cpu"), SentenceTransformer(str(tmp_path), trust_remote_code=True)):
        assert isinstance(loaded[0], CLIPClassTokenTransformer) and loaded[0].num_class_tokens == K
        torch.testing.assert_close(loaded.encode(images, convert_to_tensor=True), expected[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(loaded.encode(texts, convert_to_tensor=True), expected[1], atol=1e-6, rtol=0)

    # The Hugging Face checkpoint is stock: CLIPModel loads it strictly; the extra tokens live in their own file.
    reloaded, info = CLIPModel.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for name, value in oblique[0].model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], value)
    tokens = load_file(str(tmp_path / "oblique_class_tokens" / "model.safetensors"))["tokens"]
    torch.testing.assert_close(tokens, oblique[0].extra_class_tokens.tokens.detach())

    # Building from a saved oblique model keeps its (trained) class tokens, so K must match.
    rebuilt = st_oblique.oblique_clip(str(tmp_path), num_tokens=K, token_dim=D, device="cpu")
    torch.testing.assert_close(rebuilt[0].extra_class_tokens.tokens, oblique[0].extra_class_tokens.tokens)
    with pytest.raises(ValueError, match=f"saved with {K} class tokens"):
        st_oblique.oblique_clip(str(tmp_path), num_tokens=K + 1, token_dim=D)


def test_missing_or_damaged_class_tokens_are_named(oblique, tmp_path):
    oblique.save(str(tmp_path))
    tokens_file = tmp_path / "oblique_class_tokens" / "model.safetensors"
    tokens_file.write_bytes(tokens_file.read_bytes()[:40])
    with pytest.raises(ObliqueLoadError, match=r"oblique_class_tokens/model\.safetensors is not a readable"):
        st_oblique.load(str(tmp_path))
    shutil.rmtree(tmp_path / "oblique_class_tokens")
    with pytest.raises(ObliqueLoadError, match=r"oblique_class_tokens/model\.safetensors is missing"):
        st_oblique.load(str(tmp_path))


def test_stock_clip_loading_is_unchanged(clip_dir, stock, tmp_path):
    clip, processor = stock
    images = tiny_images(2)
    with torch.no_grad():
        expected = clip.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
    for model in (SentenceTransformer(clip_dir), st_oblique.ObliqueSentenceTransformer(clip_dir)):
        assert type(model[0]).__name__ == "Transformer"
        torch.testing.assert_close(model.encode(images, convert_to_tensor=True), expected)

    # A stock Sentence Transformers CLIP folder is a valid starting point too.
    SentenceTransformer(clip_dir).save(str(tmp_path))
    model = st_oblique.oblique_clip(str(tmp_path), num_tokens=1, token_dim=16, device="cpu")
    torch.testing.assert_close(model.encode(images, convert_to_tensor=True), F.normalize(expected, dim=-1))


def test_inputs_as_mteb_and_users_send_them(oblique, tmp_path):
    image = tiny_images(1)[0]
    path = tmp_path / "photo.png"
    image.save(path)
    expected = oblique.encode([image], convert_to_tensor=True)
    for given in ([str(path)], [{"image": image}], [image.convert("RGBA")]):
        torch.testing.assert_close(oblique.encode(given, convert_to_tensor=True), expected)
    assert oblique.encode([image.convert("L")]).shape == (1, K * D)

    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"damaged\.jpg"):
        oblique.encode([str(damaged)])
    with pytest.raises(ValueError, match="mixes multiple modalities"):
        oblique.encode([image, "a caption"])


def test_refuses_other_models(tiny_bert_dir):
    with pytest.raises(ValueError, match="needs a Hugging Face CLIP model"):
        st_oblique.oblique_clip(tiny_bert_dir, num_tokens=2, token_dim=4)


def test_placement_is_described(oblique):
    placement = oblique[0].class_token_placement
    assert set(placement) == {"text", "image"}
    assert "after" in placement["text"] and "EOS" in placement["text"] and str(K) in placement["image"]


def test_trainer_updates_every_used_parameter(clip_dir, tmp_path):
    torch.manual_seed(0)
    model = st_oblique.oblique_clip(clip_dir, num_tokens=K, token_dim=D, device="cpu")
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"0.model.logit_scale", "0.model.visual_projection.weight", "0.model.text_projection.weight"}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    dataset = tiny_image_caption_dataset(8)
    assert isinstance(dataset[0]["image"], Image.Image)
    trainer = train_steps(model, dataset, tmp_path, steps=2)
    assert trainer.state.global_step == 2
    after = dict(model.named_parameters())
    unchanged = {name for name, value in before.items() if torch.equal(value, after[name])}
    assert unchanged == frozen
    assert "0.extra_class_tokens.tokens" in set(before) - unchanged


def test_heads_start_from_clip_projections(oblique):
    # P = 16 columns, d = 8: token k starts from columns [8 * (k mod 2), 8 * (k mod 2) + 8).
    clip = oblique[0].model
    for modality, projection in (("text", clip.text_projection), ("image", clip.visual_projection)):
        head = oblique[1].heads[modality].projection
        for k in range(K):
            block = k % 2
            torch.testing.assert_close(head[k], projection.weight.T[:, block * D : (block + 1) * D])
    random_heads = st_oblique.oblique_clip(
        oblique[0].model.name_or_path, num_tokens=K, token_dim=D, init_from_clip_projections=False
    )
    assert not torch.allclose(random_heads[1].heads["image"].projection[0], oblique[1].heads["image"].projection[0])
