"""Calibration inputs of st_oblique.export: lists, text files, image folders, named datasets (no export runs here)."""

from __future__ import annotations

import pytest
from PIL import Image
from tiny_models import FLICKR_CAPTIONS, SENTENCES, tiny_data_root, tiny_images

from st_oblique.errors import ObliqueInputError
from st_oblique.export.calibration import PROBE_TEXTS, probe_images, resolve_calibration


def test_lists_and_mappings():
    assert resolve_calibration(SENTENCES, max_samples=100) == {"text": SENTENCES}
    images = tiny_images(3)
    found = resolve_calibration(images, max_samples=100)
    assert list(found) == ["image"] and all(isinstance(image, Image.Image) for image in found["image"])
    mixed = resolve_calibration({"text": SENTENCES[:2], "image": images[:1]}, max_samples=100)
    assert mixed["text"] == SENTENCES[:2] and len(mixed["image"]) == 1
    assert resolve_calibration(None, max_samples=10) == {} and resolve_calibration([], max_samples=10) == {}


def test_a_fixed_random_subset():
    texts = [f"text {index}" for index in range(50)]
    first = resolve_calibration(texts, max_samples=7)["text"]
    assert len(first) == 7 and len(set(first)) == 7 and set(first) <= set(texts)
    assert resolve_calibration(texts, max_samples=7)["text"] == first  # the same subset every time
    assert first != texts[:7]


def test_files_folders_and_datasets(tmp_path):
    lines = tmp_path / "texts.txt"
    lines.write_text("first text\n\n  second text  \n")
    assert resolve_calibration(lines, max_samples=10) == {"text": ["first text", "second text"]}
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for index, image in enumerate(tiny_images(3)):
        image.save(folder / ("nested" if index else "") / f"{index}.png")
    (folder / "notes.txt").write_text("not an image")
    assert len(resolve_calibration(folder, max_samples=10)["image"]) == 3
    (tmp_path / "data").mkdir()
    root = tiny_data_root(tmp_path / "data")
    flickr = resolve_calibration("flickr8k_1k", max_samples=100, data_root=root)
    assert sorted(flickr["text"]) == sorted(caption for group in FLICKR_CAPTIONS.values() for caption in group)
    assert len(flickr["image"]) == len(FLICKR_CAPTIONS)
    imagenette = resolve_calibration("imagenette", max_samples=100, data_root=root)
    assert "a photo of a tench." in imagenette["text"] and len(imagenette["image"]) == 6


def test_unusable_calibration_inputs(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ObliqueInputError, match=r"holds no text"):
        resolve_calibration(tmp_path / "empty.txt", max_samples=10)
    with pytest.raises(FileNotFoundError, match=r"flickr8k_1k"):
        resolve_calibration("flickr8k_1k", max_samples=10, data_root=tmp_path / "nowhere")


def test_probe_inputs_cover_short_and_long_texts_and_several_image_sizes():
    words = [len(text.split()) for text in PROBE_TEXTS]
    assert min(words) == 1 and max(words) >= 180
    sizes = {image.size for image in probe_images(4)}
    assert len(sizes) == 4 and all(image.mode == "RGB" for image in probe_images(4))
