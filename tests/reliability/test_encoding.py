"""Encoding degenerate inputs: refused naming the input's index, or converted as their PIL equivalents are; the
caller's inputs are never modified; ``encode([])`` is an empty ``(0, K*d)`` array."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from reliability.reliability_helpers import D, K
from tiny_models import tiny_images

import st_oblique
from st_oblique.data.images import load_image
from st_oblique.errors import ObliqueInputError

MODELS = ["hf_clip", "open_clip"]
GOOD = tiny_images(1, (32, 32), seed=5)[0]
RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (32, 32), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (32, 32, 4), dtype=np.uint8)


def fingerprint(items) -> list[str]:
    out = []
    for item in items:
        if isinstance(item, Image.Image):
            out.append(hashlib.sha256(item.tobytes()).hexdigest() + item.mode + str(item.size))
        elif isinstance(item, torch.Tensor):
            out.append(hashlib.sha256(item.numpy().tobytes()).hexdigest() + str(tuple(item.shape)))
        elif isinstance(item, np.ndarray):
            out.append(hashlib.sha256(item.tobytes()).hexdigest() + str(item.shape) + str(item.dtype))
        else:
            out.append(repr(item))
    return out


REFUSED = {
    "0x0 image": (lambda: Image.new("RGB", (0, 0)), "Input 1: the image is 0x0 pixels"),
    "0-wide image": (lambda: Image.new("RGB", (0, 5)), "Input 1: the image is 0x5 pixels"),
    "NaN tensor": (lambda: torch.full((3, 32, 32), float("nan")), "Input 1: the image array holds NaN or inf"),
    "inf array (HWC)": (lambda: np.full((32, 32, 3), np.inf, dtype=np.float32), "Input 1: the image array holds NaN or inf"),
    "None": (lambda: None, "Input 1 is None"),
    "float grey outside [0, 1]": (lambda: np.full((8, 8), 3.0, dtype=np.float32), "values in [0, 1], got [3, 3]"),
    "empty array": (lambda: np.zeros((0, 0, 3), dtype=np.uint8), "has no pixels"),
}


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_naming_the_index(case, model_name, image_models):
    make, expected = REFUSED[case]
    inputs = [GOOD, make()]
    before = fingerprint(inputs)
    with pytest.raises(ObliqueInputError) as raised:
        image_models[model_name].encode(inputs)
    assert expected in str(raised.value), str(raised.value)
    assert fingerprint(inputs) == before


CONVERTED = {
    "grey uint8 (H, W)": (GREY, Image.fromarray(GREY)),
    "RGBA uint8 (H, W, 4)": (RGBA, Image.fromarray(RGBA).convert("RGB")),
    "RGBA tensor (4, H, W)": (torch.from_numpy(RGBA).permute(2, 0, 1).contiguous(), Image.fromarray(RGBA).convert("RGB")),
    "grey (H, W, 1)": (GREY[..., None], Image.fromarray(GREY)),
}


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("case", list(CONVERTED))
def test_converted_like_its_pil_equivalent(case, model_name, image_models):
    array, pil = CONVERTED[case]
    model = image_models[model_name]
    inputs = [GOOD, array]
    before = fingerprint(inputs)
    embeddings = model.encode(inputs, convert_to_tensor=True)
    reference = model.encode([GOOD, pil], convert_to_tensor=True)
    assert embeddings.shape == (2, K * D) and bool(torch.isfinite(embeddings).all())
    torch.testing.assert_close(embeddings, reference, atol=1e-5, rtol=0)
    assert fingerprint(inputs) == before


@pytest.mark.parametrize("model_name", MODELS)
def test_single_degenerate_image_is_refused_too(model_name, image_models):
    with pytest.raises(ObliqueInputError, match="Input 0: the image is 0x0 pixels"):
        image_models[model_name].encode(Image.new("RGB", (0, 0)))


@pytest.mark.parametrize("model_name", ["text", *MODELS])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_encode_empty_list(model_name, as_tensor, image_models, saved_model):
    model = st_oblique.load(str(saved_model.path)) if model_name == "text" else image_models[model_name]
    out = model.encode([], convert_to_tensor=as_tensor)
    assert tuple(out.shape) == (0, K * D)


def test_text_model_refuses_none_in_a_batch(saved_model):
    model = st_oblique.load(str(saved_model.path))
    texts = ["a man plays the guitar", None, "a dog"]
    with pytest.raises(ObliqueInputError, match=r"^Input 1 is None; pass a text or an image"):
        model.encode(texts)
    assert texts == ["a man plays the guitar", None, "a dog"]


def test_load_image_refuses_a_zero_sized_file(tmp_path):
    path = tmp_path / "blank.png"
    Image.new("RGB", (1, 1)).resize((1, 1)).save(path)
    assert load_image(str(path)).size == (1, 1)
    with pytest.raises(ObliqueInputError, match="0x0 pixels"):
        load_image(Image.new("L", (0, 0)))
