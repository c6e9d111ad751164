"""Files written by an older st-oblique release load.

Loading without st-oblique, newer-release files and unmet version requirements are tested through the Hub in
test_hub_roundtrip.py, and locally in tests/test_model.py and tests/modules/test_serialization.py.
"""

from __future__ import annotations

import json
import shutil

import torch
from tiny_models import SENTENCES

import st_oblique


def test_files_of_an_older_release_still_load(saved_text_model, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(saved_text_model.path, copy)
    for config_path in [copy / "1_ObliquePooling" / "config.json", copy / "sentence_bert_config.json"]:
        config = json.loads(config_path.read_text())
        config["st_oblique_version"] = "0.0.1"
        config_path.write_text(json.dumps(config))
    loaded = st_oblique.load(str(copy))
    torch.testing.assert_close(loaded.encode(SENTENCES, convert_to_tensor=True), saved_text_model.embeddings, atol=1e-6, rtol=0)
