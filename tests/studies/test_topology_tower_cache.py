"""The frozen towers' output cache is keyed by what the towers are, so stale outputs are never reused."""

from __future__ import annotations

import os
import shutil

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
