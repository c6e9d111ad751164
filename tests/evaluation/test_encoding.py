"""Oblique detection from the model, and batched image encoding (any input form, worker processes, order)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from tiny_models import tiny_images

from st_oblique.data.images import load_image
from st_oblique.evaluation.encoding import embedding_num_tokens, encode_images, oblique_num_tokens


def test_oblique_tokens_are_read_from_the_model(clip_model, oblique_model, oblique_k1_model):
    assert oblique_num_tokens(clip_model) is None and embedding_num_tokens(clip_model) == 1
    assert oblique_num_tokens(oblique_model) == 4
    assert oblique_num_tokens(oblique_k1_model) == 1


def test_truncate_dim_must_keep_whole_tokens(oblique_model):
    try:
        oblique_model.truncate_dim = 16
        assert oblique_num_tokens(oblique_model) == 2
        with pytest.raises(ValueError, match="multiple of 8"):  # ObliqueSentenceTransformer refuses it outright
            oblique_model.truncate_dim = 12
    finally:
        oblique_model.truncate_dim = None
    # a plain SentenceTransformer with oblique modules accepts any truncate_dim: the harness must refuse it
    plain = SentenceTransformer(modules=list(oblique_model), device="cpu", truncate_dim=12)
    with pytest.raises(ValueError, match="multiple of 8"):
        oblique_num_tokens(plain)


def test_encode_images_matches_model_encode_for_every_input_form(oblique_model, tmp_path):
    images = tiny_images(5, size=(20, 28), seed=3)
    expected = oblique_model.encode(images, convert_to_tensor=True)
    paths, blobs = [], []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"{index}.png")
        image.save(paths[-1])
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        blobs.append(buffer.getvalue())
    arrays = [np.asarray(image) for image in images]
    hf_dicts = [{"bytes": blob, "path": None} for blob in blobs]
    for inputs in (images, paths, [str(path) for path in paths], blobs, arrays, hf_dicts):
        torch.testing.assert_close(encode_images(oblique_model, inputs, batch_size=2), expected, atol=1e-5, rtol=0)


def test_encode_images_with_worker_processes_keeps_order(clip_model):
    images = tiny_images(7, seed=4)
    in_process = encode_images(clip_model, images, batch_size=3)
    with_workers = encode_images(clip_model, images, batch_size=3, num_workers=1)
    torch.testing.assert_close(with_workers, in_process, atol=1e-6, rtol=0)
    assert in_process.shape == (7, clip_model.get_embedding_dimension())


def test_text_only_model_is_refused_with_a_reason(text_model):
    with pytest.raises(ValueError, match="image-text model"):
        encode_images(text_model, tiny_images(1))


def test_load_image_errors(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.png.*does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="Cannot use a int as an image"):
        load_image(3)
    assert load_image(np.zeros((4, 5), dtype=np.uint8)).mode == "RGB"


def test_every_encoding_loop_shows_progress_unless_turned_off(oblique_model, digits, data_root, capsys):
    """The Python API shows a bar over text and image batches by default (no log level to set), none with False."""
    from st_oblique.evaluation import load_dataset, zeroshot_classification, zeroshot_retrieval

    flickr = load_dataset("flickr8k_1k", data_root=data_root, max_samples=6)
    capsys.readouterr()
    zeroshot_classification(oblique_model, digits.images[:8], digits.labels[:8], digits.classnames,
                            templates=["a photo of {c}."], batch_size=4)
    zeroshot_retrieval(oblique_model, flickr.images, flickr.captions, batch_size=4)
    shown = capsys.readouterr().err
    assert shown.count("Encoding images: 100%") == 2 and shown.count("Batches: 100%") == 2
    zeroshot_classification(oblique_model, digits.images[:8], digits.labels[:8], digits.classnames,
                            templates=["a photo of {c}."], batch_size=4, show_progress_bar=False)
    zeroshot_retrieval(oblique_model, flickr.images, flickr.captions, batch_size=4, show_progress_bar=False)
    assert capsys.readouterr().err == ""
