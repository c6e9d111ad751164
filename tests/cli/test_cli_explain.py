"""``st-oblique explain``: per-token contributions (they sum to the score) and the K-panel attention PNG."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from tiny_models import SENTENCES, tiny_images, tiny_timm

import st_oblique
from st_oblique import manifold

K, D = 4, 8


@pytest.fixture(scope="module")
def lit_folder(tiny_bert_dir, tmp_path_factory):
    cnn = tiny_timm(tmp_path_factory.mktemp("cnn"), architecture="test_efficientnet", image_size=64)
    torch.manual_seed(0)
    model = st_oblique.oblique_dual_encoder(tiny_bert_dir, cnn, num_tokens=K, token_dim=D, device="cpu")
    folder = tmp_path_factory.mktemp("lit") / "model"
    model.save(str(folder))
    return folder


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    tiny_images(1, size=(64, 64), seed=5)[0].save(path)
    return path


def test_image_text_prints_contributions_and_writes_the_png(cli, lit_folder, photo, tmp_path):
    output = tmp_path / "figures" / "explain.png"
    result = cli(
        "explain", str(lit_folder), "--image", str(photo), "--text", SENTENCES[0], "--output", str(output), "--json"
    )
    assert result.code == 0, result.err
    report = json.loads(result.out)
    model = st_oblique.load(str(lit_folder), device="cpu")
    image_embedding = model.encode([Image.open(photo)], convert_to_tensor=True)
    text_embedding = model.encode([SENTENCES[0]], convert_to_tensor=True)
    expected = manifold.per_token_similarity(image_embedding, text_embedding, K)[0, 0]
    torch.testing.assert_close(torch.tensor(report["contributions"]), expected, atol=1e-5, rtol=0)
    assert sum(report["contributions"]) == pytest.approx(
        float(model.similarity(image_embedding, text_embedding)), abs=1e-5
    )
    assert report["attention_png"] == str(output) and output.is_file()
    with Image.open(output) as png:
        assert png.format == "PNG" and png.width > 100
    text = cli("explain", str(lit_folder), "--image", str(photo), "--text", SENTENCES[0], "--output", str(output))
    assert text.code == 0 and "sum of 4 token cosines" in text.out and "attention of each image token" in text.out


def test_text_text_and_bad_arguments(cli, lit_folder, tiny_bert_dir, tmp_path, photo):
    result = cli("explain", str(lit_folder), "--text", SENTENCES[0], "--text", SENTENCES[1])
    assert result.code == 0 and result.out.count("token ") >= K
    bad = cli("explain", str(lit_folder), "--text", SENTENCES[0])
    assert bad.code == 2 and "--text A --text B" in bad.err
    bad = cli("explain", str(lit_folder), "--image", str(photo))
    assert bad.code == 2 and "exactly one --text" in bad.err
    # a class-token text model has no attention pooling over an image: no PNG, and it says why
    torch.manual_seed(0)
    text_model = tmp_path / "text_model"
    st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D).save(str(text_model))
    result = cli("explain", str(text_model), "--text", "a dog", "--text", "a cat", "--json")
    assert result.code == 0 and json.loads(result.out)["attention_png"] is None
