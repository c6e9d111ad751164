"""``st-oblique eval`` on converted clip-mtob folders: the retrieval recalls it records are those of the official
model (its ``encode_image`` / ``encode_text`` and its sum-of-cosines score) on the same images and captions."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import pytest
import torch
from clip_mtob.oracle import VARIANTS, official_embeddings
from PIL import Image
from tiny_models import tiny_data_root

from st_oblique.app.cli import main

pytestmark = pytest.mark.shared


def flickr_files(root):
    """The tiny Flickr8k-1k stand-in's images (in caption-table order) and captions with their image's index."""
    with open(root / "flickr8k_1k" / "captions.tsv", encoding="utf-8", newline="") as handle:
        rows = sorted(csv.DictReader(handle, delimiter="\t"), key=lambda row: (row["image"], int(row["caption_idx"])))
    names = list(dict.fromkeys(row["image"] for row in rows))
    with tarfile.open(root / "flickr8k_1k" / "flickr8k_1k_images_256.tar") as archive:
        payloads = {member.name.rsplit("/", 1)[-1]: archive.extractfile(member).read() for member in archive if member.isfile()}
    images = [Image.open(io.BytesIO(payloads[name])).convert("RGB") for name in names]
    return images, [row["caption"] for row in rows], torch.tensor([names.index(row["image"]) for row in rows])


def recalls(scores: torch.Tensor, owner: torch.Tensor) -> dict[str, float]:
    """CLIP_benchmark's definitions on a (captions, images) score matrix: text -> image (``image_retrieval``), and
    image -> text (``text_retrieval``: any of the image's captions in the top k)."""
    result = {}
    for k in (1, 5, 10):
        top_images = scores.topk(min(k, scores.shape[1]), dim=1).indices
        result[f"image_retrieval_recall@{k}"] = (top_images == owner[:, None]).any(dim=1).float().mean().item()
        top_captions = scores.T.topk(min(k, scores.shape[0]), dim=1).indices
        hits = owner[top_captions] == torch.arange(scores.shape[1])[:, None]
        result[f"text_retrieval_recall@{k}"] = hits.any(dim=1).float().mean().item()
    return result


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_eval_records_the_official_models_recalls(variant, converted, official, official_models, tmp_path, capsys):
    data_root = tiny_data_root((tmp_path / "data").mkdir() or tmp_path / "data")
    output = tmp_path / "eval"
    code = main(["eval", "--model", f"{variant}={converted[variant]}", "--dataset", "flickr8k_1k", "--data-root",
                 str(data_root), "--no-progress", "--output-dir", str(output)])
    assert code == 0, capsys.readouterr().err
    (record,) = [json.loads(path.read_text()) for path in (output / "records").glob("*.json")]

    images, captions, owner = flickr_files(data_root)
    image_tokens = official_embeddings(official_models[variant], official, images=images)  # (I, K, d)
    text_tokens = official_embeddings(official_models[variant], official, texts=captions)  # (T, K, d)
    scores = torch.einsum("tkd,ikd->ti", text_tokens.double(), image_tokens.double())  # sums of K cosines
    expected = recalls(scores, owner)
    assert expected["image_retrieval_recall@1"] < 1.0  # random weights: a recall that can differ
    for key, value in expected.items():
        assert record["metrics"][key] == pytest.approx(value, abs=1e-9), key
