"""Dataset readers (class folders, tar archives, IDX, caption tables, WebDataset, HF datasets) and the registry."""

from __future__ import annotations

import gzip
import json
import tarfile

import datasets
import numpy as np
import pytest
from tiny_models import FLICKR_CAPTIONS, IMAGENETTE_WNIDS, tar_add, tiny_images, tiny_png

from st_oblique.data.datasets import (
    ClassificationDataset,
    RetrievalDataset,
    from_hf_dataset,
    load_dataset,
    read_idx,
    read_image_folder,
    read_wds,
)
from st_oblique.data.datasets.registry import FASHION_MNIST_CLASSES, IMAGENETTE_CLASSES
from st_oblique.data.images import load_image
from st_oblique.data.templates import DEFAULT_TEMPLATES, class_prompts, load_classnames, load_templates


def test_image_folder_and_tar_give_the_same_dataset(tmp_path):
    images = tiny_images(6, seed=1)
    with tarfile.open(tmp_path / "pets.tar", "w") as archive:
        for index, image in enumerate(images):
            folder = tmp_path / "pets" / "test" / ["great_dane", "cat"][index % 2]
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{index}.png")
            tar_add(archive, f"test/{['great_dane', 'cat'][index % 2]}/{index}.png", tiny_png(image))
    from_folder = load_dataset("pets", path=tmp_path / "pets" / "test")
    from_tar = load_dataset("pets", path=tmp_path / "pets.tar")
    assert from_folder.classnames == from_tar.classnames == ["cat", "great dane"]  # sorted folders, "_" -> " "
    assert from_folder.labels == from_tar.labels == [0, 0, 0, 1, 1, 1]
    for index in range(6):
        assert np.array_equal(
            np.asarray(load_image(from_folder.images[index])), np.asarray(load_image(from_tar.images[index]))
        )
    named = read_image_folder(tmp_path / "pets", split="test", classnames={"cat": "kitten", "great_dane": "dog"})
    assert named.classnames == ["kitten", "dog"]
    with pytest.raises(ValueError, match="2 class folders but 3 class names"):
        read_image_folder(tmp_path / "pets" / "test", classnames=["a", "b", "c"])


def test_registry_reads_the_shared_layout(data_root):
    imagenette = load_dataset("imagenette", data_root=data_root)
    assert isinstance(imagenette, ClassificationDataset) and len(imagenette) == 6
    assert imagenette.classnames == [IMAGENETTE_CLASSES[wnid] for wnid in IMAGENETTE_WNIDS]
    assert imagenette.template_key == "imagenet1k"
    assert load_image(imagenette.images[5]).size == (30, 24)

    fashion = load_dataset("fashion_mnist", data_root=data_root)
    assert fashion.labels == list(range(10)) and fashion.classnames == FASHION_MNIST_CLASSES
    with gzip.open(data_root / "fashion_mnist/t10k-images-idx3-ubyte.gz") as handle:
        pixels = np.frombuffer(handle.read()[16:], dtype=np.uint8).reshape(10, 28, 28)  # 16-byte IDX header
    for index in (0, 9):
        assert np.array_equal(np.asarray(load_image(fashion.images[index]))[..., 0], pixels[index])

    flickr = load_dataset("flickr8k_1k", data_root=data_root)
    assert isinstance(flickr, RetrievalDataset)
    assert flickr.captions == list(FLICKR_CAPTIONS.values())  # image order kept, captions sorted by caption_idx
    assert load_image(flickr.images[3]).size == (30, 24)

    digits = load_dataset("sklearn_digits")
    assert len(digits) == 1797 and digits.templates == ['a photo of the number: "{c}".']


def test_subsets_are_reproducible_and_keep_captions(data_root):
    first = load_dataset("flickr8k_1k", data_root=data_root, max_samples=3, seed=5)
    second = load_dataset("flickr8k_1k", data_root=data_root, max_samples=3, seed=5)
    assert first.captions == second.captions and len(first) == 3
    index = list(FLICKR_CAPTIONS.values()).index(first.captions[1])
    full = load_dataset("flickr8k_1k", data_root=data_root)
    assert load_image(first.images[1]).tobytes() == load_image(full.images[index]).tobytes()


def test_registry_errors_say_what_to_do(data_root, tmp_path):
    with pytest.raises(KeyError, match=r"Unknown dataset 'nope'.*imagenette"):
        load_dataset("nope")
    with pytest.raises(FileNotFoundError, match="imagenette not found at"):
        load_dataset("imagenette", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="No t10k-images-idx3-ubyte"):
        load_dataset("fashion_mnist", path=tmp_path)


def test_idx_reader_checks_the_header(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"\x00\x01")
    with pytest.raises(ValueError, match="holds 2 bytes"):
        read_idx(tmp_path / "short.idx")


def test_webdataset_export_and_hf_dataset(tmp_path):
    """CLIP_benchmark's WebDataset layout (classification and retrieval) and a Hugging Face image dataset."""
    images = tiny_images(4, seed=2)
    for kind in ("cls", "ret"):
        (tmp_path / kind / "test").mkdir(parents=True)
        with tarfile.open(tmp_path / kind / "test" / "0.tar", "w") as archive:
            for index, image in enumerate(images):
                tar_add(archive, f"s{index:04d}.png", tiny_png(image))
                if kind == "cls":
                    tar_add(archive, f"s{index:04d}.cls", str(index % 2).encode())
                else:
                    tar_add(archive, f"s{index:04d}.txt", f"caption {index}\nanother caption {index}".encode())
    (tmp_path / "cls" / "classnames.txt").write_text("airplane\nbird\n")
    (tmp_path / "cls" / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\na {c}.\n")
    (tmp_path / "ret" / "dataset_type.txt").write_text("retrieval\n")
    cache = str(tmp_path / "hf_cache")

    classification = read_wds(tmp_path / "cls", cache_dir=cache)
    assert classification.classnames == ["airplane", "bird"] and classification.labels == [0, 1, 0, 1]
    assert classification.templates == ["a photo of a {c}.", "a {c}."]
    assert np.array_equal(np.asarray(load_image(classification.images[2])), np.asarray(images[2]))

    retrieval = read_wds(tmp_path / "ret", cache_dir=cache)
    assert isinstance(retrieval, RetrievalDataset)
    assert retrieval.captions[3] == ["caption 3", "another caption 3"]

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    hf = datasets.Dataset.from_dict({"img": images[:3], "label": [2, 0, 1]}, features=features)
    wrapped = from_hf_dataset(hf, name="hf-test")
    assert wrapped.classnames == ["a", "b", "c"] and wrapped.labels == [2, 0, 1]
    assert np.array_equal(np.asarray(load_image(wrapped.images[0])), np.asarray(images[0]))


def test_templates_follow_clip_benchmark_formats(tmp_path):
    assert len(DEFAULT_TEMPLATES) == 80 and DEFAULT_TEMPLATES[0] == "a bad photo of a {c}."
    (tmp_path / "templates.json").write_text(json.dumps({"imagenet1k": ["a {c}."], "cifar10": ["a photo of a {c}."]}))
    assert load_templates(tmp_path / "templates.json", dataset="cifar10") == ["a photo of a {c}."]
    assert load_templates(tmp_path / "templates.json", dataset="imagenette") == ["a {c}."]  # CLIP_benchmark's fallback
    (tmp_path / "cupl.json").write_text(json.dumps({"cat": ["a small cat"], "dog": ["a loyal dog", "a dog"]}))
    prompts = load_templates(tmp_path / "cupl.json", classnames=["dog", "cat"])
    assert class_prompts(["dog", "cat"], prompts) == [["a loyal dog", "a dog"], ["a small cat"]]
    (tmp_path / "names.json").write_text(json.dumps({"pets": ["cat", "dog"]}))
    assert load_classnames(tmp_path / "names.json", "pets") == ["cat", "dog"]
    with pytest.raises(ValueError, match="no class names for dataset 'cars'"):
        load_classnames(tmp_path / "names.json", "cars")


@pytest.mark.shared
def test_shared_sets_match_their_metadata(shared):
    meta = json.loads((shared / "data/meta/classnames.json").read_text())
    templates = json.loads((shared / "data/meta/clip_benchmark_en_zeroshot_templates.json").read_text())
    assert list(DEFAULT_TEMPLATES) == templates["imagenet1k"]
    assert [IMAGENETTE_CLASSES[w] for w in meta["imagenette_wnids"]] == meta["imagenette"]
    assert FASHION_MNIST_CLASSES == meta["fashion_mnist"]
    imagenette = load_dataset("imagenette", data_root=shared / "data")
    assert len(imagenette) == 3925 and imagenette.classnames == meta["imagenette"]
    assert np.bincount(imagenette.labels).min() > 350
    fashion = load_dataset("fashion_mnist", data_root=shared / "data")
    assert len(fashion) == 10000 and np.bincount(fashion.labels).tolist() == [1000] * 10
    flickr = load_dataset("flickr8k_1k", data_root=shared / "data")
    assert len(flickr) == 1000 and {len(group) for group in flickr.captions} == {5}
    assert min(load_image(flickr.images[999]).size) == 256  # short side 256 px
