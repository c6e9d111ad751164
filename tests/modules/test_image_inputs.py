"""Image inputs: every form users and MTEB pass becomes an RGB PIL image; unreadable files are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_images

from st_oblique.data.images import load_image, load_images


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_any_pil_mode_becomes_rgb(mode):
    source = tiny_images(1)[0].convert(mode)
    image = load_image(source)
    assert image.mode == "RGB" and image.size == source.size
    np.testing.assert_array_equal(pixels(image), pixels(source))


def test_paths_dicts_and_arrays(tmp_path):
    source = tiny_images(1)[0]
    path = tmp_path / "photo.png"
    source.save(path)
    array = np.array(source)
    for given in (str(path), path, {"image": source}, {"image": str(path)}, array, torch.from_numpy(array).permute(2, 0, 1)):
        image = load_image(given)
        assert image.mode == "RGB"
        np.testing.assert_array_equal(pixels(image), array)
    floats = load_image(array.astype(np.float32) / 255.0)  # floats in [0, 1] are rescaled
    assert np.abs(pixels(floats).astype(int) - array.astype(int)).max() <= 1
    assert [im.size for im in load_images([source, str(path)])] == [source.size] * 2


def test_a_damaged_file_is_named(tmp_path):
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match=r"Cannot read the image file .*damaged\.jpg"):
        load_image(str(damaged))
    truncated = tmp_path / "truncated.png"
    buffer = tmp_path / "full.png"
    tiny_images(1, size=(64, 64))[0].save(buffer)
    truncated.write_bytes(buffer.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated\.png"):
        load_image(truncated)
    with pytest.raises(ValueError, match=r"missing\.png.*does not exist"):
        load_image(str(tmp_path / "missing.png"))


def test_non_images_are_refused():
    with pytest.raises(ValueError, match=r"must be \{'image'"):
        load_image({"image": tiny_images(1)[0], "text": "a caption"})
    with pytest.raises(ValueError, match=r"2 \(H, W\) or 3 \(HWC or CHW\) dimensions"):
        load_image(np.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="Cannot use a int"):
        load_image(3)
