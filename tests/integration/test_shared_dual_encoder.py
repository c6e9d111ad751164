"""The LiT-style dual encoder on the real MiniLM and EfficientNet-Lite0 weights and real photos in ../shared.

Skipped when ../shared is absent. Images are read from the tar archives in place (nothing is extracted).
"""

from __future__ import annotations

import csv
import io
import tarfile

import pytest
import torch
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from tiny_models import train_steps

import st_oblique
from st_oblique import manifold

K, D = 16, 32


def read_tar_images(archive: str, names: list[str]) -> list[Image.Image]:
    with tarfile.open(archive) as tar:
        return [Image.open(io.BytesIO(tar.extractfile(name).read())).convert("RGB") for name in names]


def flickr_pairs(shared, count: int) -> tuple[list[Image.Image], list[str]]:
    """The first caption of the first ``count`` photos of flickr8k_1k."""
    captions: dict[str, str] = {}
    with open(shared / "data/flickr8k_1k/captions.tsv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            captions.setdefault(row["image"], row["caption"])
            if len(captions) == count:
                break
    names = list(captions)
    archive = shared / "data/flickr8k_1k/flickr8k_1k_images_256.tar"
    return read_tar_images(str(archive), [f"images_256/{name}" for name in names]), [captions[n] for n in names]


def imagenette_images(shared, per_class: int = 1) -> list[Image.Image]:
    archive = shared / "data/imagenette/imagenette_val_224.tar"
    if not archive.exists():
        pytest.skip(f"{archive} not found")
    chosen: dict[str, list[str]] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and len(chosen.setdefault(parts[1], [])) < per_class:
                chosen[parts[1]].append(member.name)
    return read_tar_images(str(archive), [name for names in chosen.values() for name in names])


@pytest.mark.shared
@pytest.mark.slow
def test_minilm_efficientnet_dual_encoder_trains_and_encodes(shared, tmp_path):
    text_model = shared / "weights/all-MiniLM-L6-v2"
    image_model = shared / "weights/tf_efficientnet_lite0"
    for path in (text_model, image_model, shared / "data/flickr8k_1k/captions.tsv"):
        if not path.exists():
            pytest.skip(f"{path} not found")
    torch.manual_seed(0)
    model = st_oblique.oblique_dual_encoder(str(text_model), str(image_model), num_tokens=K, token_dim=D, device="cpu")
    assert model[1].token_source == {"text": "first", "image": "attention"}
    assert model[1].in_features == {"text": 384, "image": 1280}

    images, captions = flickr_pairs(shared, 8)
    dataset = Dataset.from_dict(
        {"image": images, "caption": captions}, features=Features({"image": ImageFeature(), "caption": Value("string")})
    )
    heads = {name: p.detach().clone() for name, p in model.named_parameters() if name.startswith("1.heads")}
    trainer = train_steps(model, dataset, tmp_path, steps=2, batch_size=4, learning_rate=1e-3)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    after = dict(model.named_parameters())
    assert all(not torch.equal(value, after[name]) for name, value in heads.items())

    photos = imagenette_images(shared)
    assert len(photos) == 10
    image_embeddings = model.encode(photos, batch_size=10, convert_to_tensor=True)
    text_embeddings = model.encode([f"a photo of a {i}" for i in range(3)], convert_to_tensor=True)
    assert image_embeddings.shape == (10, K * D) and text_embeddings.shape == (3, K * D)
    assert manifold.is_on_manifold(image_embeddings, num_tokens=K)
    scores = model.similarity(image_embeddings, text_embeddings)
    assert bool((scores.abs() <= K + 1e-4).all())
