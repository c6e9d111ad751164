"""The converter at the release's real size: the official MT-OB ViT-B/16 (run_example.py's arguments) with random
weights, converted by ``st-oblique convert`` in a fresh process (time and peak memory printed with ``pytest -s``),
then one image and a few texts against the official ``encode_image`` / ``encode_text``."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch
from clip_mtob.oracle import TOLERANCE, TRICKY_TEXTS, max_diff, official_embeddings

import st_oblique

pytestmark = [pytest.mark.shared, pytest.mark.slow]

RELEASE = {  # run_example.py's CLIPWarper for modeling_clip_helper_mtob
    "embed_dim": 512, "image_resolution": 224, "vision_layers": 12, "vision_width": 768, "vision_patch_size": 16,
    "output_dim": 32, "n_class_tokens": 16, "context_length": 77, "vocab_size": 30522, "transformer_width": 512,
    "transformer_heads": 8, "transformer_layers": 12,
}  # fmt: skip

CONVERT_AND_MEASURE = """
import json, resource, sys, time, torch
torch.set_num_threads(1)
from st_oblique.app.cli import main
started = time.perf_counter()
status = main(["convert", "clip-mtob", "--checkpoint", sys.argv[1], "--vocab", sys.argv[2], "--output", sys.argv[3]])
print(json.dumps({"status": status, "seconds": time.perf_counter() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_release_size_conversion(official, photos, tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = official.mtob.CLIP(**RELEASE).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the two torch.empty parameters; the rest keeps the official initialisation
        model.positional_embedding.normal_(std=0.01, generator=generator)
        model.text_projection.normal_(std=512**-0.5, generator=generator)
    checkpoint = tmp_path / "vit-b16_mt-ob-32-16_e32_f32k_2.pt"
    torch.save(model.state_dict(), checkpoint)
    output = tmp_path / "converted"
    result = subprocess.run(
        [sys.executable, "-c", CONVERT_AND_MEASURE, str(checkpoint), str(official.vocab), str(output)],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    size_mb = checkpoint.stat().st_size / 2**20
    print(
        f"\nfull ViT-B/16 MT-OB: checkpoint {size_mb:.0f} MiB, conversion {measured['seconds']:.1f} s, "
        f"peak RSS of the converting process {measured['peak_rss_mb']:.0f} MiB"
    )
    assert measured["status"] == 0

    converted = st_oblique.load(str(output), device="cpu")
    sizes = json.loads((output / "clip_mtob_source.json").read_text())["sizes"]
    assert (sizes["vision_layers"], sizes["vision_width"], sizes["vision_heads"], sizes["patch_size"]) == (
        12,
        768,
        12,
        16,
    )
    assert (sizes["text_layers"], sizes["text_width"], sizes["text_heads"], sizes["context_length"]) == (12, 512, 8, 77)
    assert (sizes["num_class_tokens"], sizes["token_dim"]) == (16, 32)
    image = converted.encode(photos[:1], convert_to_tensor=True).reshape(1, 16, 32)
    assert max_diff("full size image", image, official_embeddings(model, official, images=photos[:1])) <= TOLERANCE
    texts = TRICKY_TEXTS[:2]
    text = converted.encode(texts, convert_to_tensor=True).reshape(2, 16, 32)
    assert max_diff("full size text", text, official_embeddings(model, official, texts=texts)) <= TOLERANCE
