"""The frozen towers' output cache is keyed by what the towers are, so stale outputs are never reused."""

from __future__ import annotations

import os
import shutil

import torch

from evaluation.studies.tower_cache import _model_fingerprint


def test_tower_cache_key_follows_file_contents_not_paths_or_times(tmp_path):
    model = tmp_path / "a" / "tower"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    key = _model_fingerprint(str(model))
    copy = tmp_path / "b" / "tower"
    shutil.copytree(model, copy)
    os.utime(copy / "model.safetensors", (1, 1))
    assert _model_fingerprint(str(copy)) == key
    (copy / "model.safetensors").write_bytes(b"other weights")
    assert _model_fingerprint(str(copy)) != key


def test_text_states_with_class_tokens_are_cached_apart(tmp_path, tiny_bert_dir):
    """The "first" arms read the text tower run with K class tokens ([CLS] tiled K times): its own cache file, the
    K class-token states first, every one of them a real position."""
    from tiny_models import SENTENCES, tiny_timm

    from evaluation.studies.tower_cache import TowerCache

    image = tiny_timm(tmp_path / "cnn", "test_efficientnet")
    plain = TowerCache(tiny_bert_dir, image, cache_dir=tmp_path / "cache")
    tokens, mask = plain.text_tokens("captions", SENTENCES)
    cached = TowerCache(tiny_bert_dir, image, cache_dir=tmp_path / "cache", text_class_tokens=4)
    class_tokens, class_mask = cached.text_tokens("captions", SENTENCES)
    assert len(list((tmp_path / "cache").glob("captions-text-*.pt"))) == 2
    assert class_tokens.shape[:2] == (len(SENTENCES), tokens.shape[1] + 3)
    assert bool(class_mask[:, :4].all()) and torch.equal(class_mask[:, 3:], mask)
    assert not torch.equal(class_tokens[:, 3:], tokens)  # the class tokens change every state of the encoder
    again, _ = TowerCache(tiny_bert_dir, image, cache_dir=tmp_path / "cache", text_class_tokens=4).text_tokens(
        "captions", SENTENCES
    )
    assert torch.equal(again, class_tokens)
