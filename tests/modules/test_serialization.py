"""Damaged, inconsistent or newer-release saves fail with a message that names the file and the problem."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import st_oblique
from st_oblique import ObliqueLoadError


@pytest.fixture(scope="module")
def saved(tiny_bert_dir, tmp_path_factory):
    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=4, token_dim=8)
    path = tmp_path_factory.mktemp("saved")
    model.save(str(path))
    return path


@pytest.fixture
def copy(saved, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(saved, target)
    return target


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_missing_pooling_config(copy):
    (copy / "1_ObliquePooling" / "config.json").unlink()
    with pytest.raises(ObliqueLoadError, match=r"1_ObliquePooling/config.json is missing"):
        st_oblique.load(str(copy))


def test_invalid_json(copy):
    (copy / "1_ObliquePooling" / "config.json").write_text('{"in_features": 32, ')
    with pytest.raises(ObliqueLoadError, match=r"config.json is not valid JSON"):
        st_oblique.load(str(copy))


def test_missing_weights(copy):
    (copy / "1_ObliquePooling" / "model.safetensors").unlink()
    with pytest.raises(ObliqueLoadError, match=r"1_ObliquePooling/model.safetensors is missing"):
        st_oblique.load(str(copy))


def test_truncated_weights(copy):
    weights = copy / "1_ObliquePooling" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ObliqueLoadError, match=r"model.safetensors is not a readable safetensors file"):
        st_oblique.load(str(copy))


def test_config_inconsistent_with_weights(copy):
    edit_json(copy / "1_ObliquePooling" / "config.json", lambda c: c.update(num_tokens=8, token_dim=4))
    with pytest.raises(ObliqueLoadError, match=r"does not match its config.*'heads.default.projection' has shape \(4, 32, 8\)"):
        st_oblique.load(str(copy))


def test_weights_missing_a_tensor(copy):
    weights = copy / "1_ObliquePooling" / "model.safetensors"
    state = load_file(weights)
    state.pop("heads.default.norm.weight")
    save_file(state, weights)
    with pytest.raises(ObliqueLoadError, match=r"missing tensors \['heads.default.norm.weight'\]"):
        st_oblique.load(str(copy))


def test_invalid_config_value(copy):
    edit_json(copy / "1_ObliquePooling" / "config.json", lambda c: c.update(token_source="diagonal"))
    with pytest.raises(ObliqueLoadError, match="invalid config: token_source must be one of"):
        st_oblique.load(str(copy))


def test_missing_required_key(copy):
    edit_json(copy / "1_ObliquePooling" / "config.json", lambda c: c.pop("in_features"))
    with pytest.raises(ObliqueLoadError, match=r"lacks the required key\(s\) \['in_features'\]"):
        st_oblique.load(str(copy))


def test_newer_release_is_named_with_an_upgrade_command(copy):
    edit_json(copy / "1_ObliquePooling" / "config.json", lambda c: c.update(st_oblique_version="9.0.0", token_mixer="x"))
    with pytest.raises(ObliqueLoadError, match=r'unknown key\(s\) \[\'token_mixer\'\].*st-oblique 9.0.0.*pip install -U "st-oblique>=9.0.0"'):
        st_oblique.load(str(copy))
    edit_json(copy / "sentence_bert_config.json", lambda c: c.update(st_oblique_version="9.0.0", frobnicate=True))
    with pytest.raises(ObliqueLoadError, match=r"sentence_bert_config.json has unknown key\(s\) \['frobnicate'\]"):
        st_oblique.load(str(copy))


def test_intact_copy_loads(copy, saved):
    reference = st_oblique.load(str(saved)).encode(["a dog"], convert_to_tensor=True)
    torch.testing.assert_close(st_oblique.load(str(copy)).encode(["a dog"], convert_to_tensor=True), reference)
