"""Locked towers (LiT): frozen, kept in eval mode, recorded in the module config, the same after save + load."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import SENTENCES, tiny_clip, tiny_images, tiny_open_clip, tiny_timm

import st_oblique
from st_oblique import describe_model
from st_oblique.modules.tower_lock import lock_tower

K, D = 2, 4


@pytest.fixture(scope="module")
def backbones(tmp_path_factory, tiny_bert_dir) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tower_lock")
    return {
        "bert": tiny_bert_dir,
        "clip": tiny_clip(root / "clip"),
        "open_clip": tiny_open_clip(root),
        "cnn": tiny_timm(root / "cnn", architecture="test_efficientnet"),  # BatchNorm: eval mode matters
    }


def build(kind: str, backbones: dict[str, str]):
    torch.manual_seed(0)
    if kind == "text":
        return st_oblique.oblique_text_model(backbones["bert"], num_tokens=K, token_dim=D, device="cpu")
    if kind == "clip":
        return st_oblique.oblique_clip(backbones["clip"], num_tokens=K, token_dim=D, device="cpu")
    if kind == "open_clip":
        return st_oblique.oblique_open_clip(backbones["open_clip"], num_tokens=K, token_dim=D, device="cpu")
    return st_oblique.oblique_dual_encoder(backbones["bert"], backbones["cnn"], num_tokens=K, token_dim=D, device="cpu")


def trainable_names(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


CASES = [("text", "text"), ("clip", "image"), ("open_clip", "text"), ("dual", "image")]


@pytest.mark.parametrize(("kind", "modality"), CASES)
def test_a_locked_tower_stays_locked_after_saving_and_loading(backbones, tmp_path, kind, modality):
    model = build(kind, backbones)
    before = describe_model(model)
    was_trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    tower = {id(parameter) for parameter in lock_tower(model, modality)}
    locked = describe_model(model)
    assert locked.locked_towers == [modality] and locked.parameters == before.parameters
    assert locked.trainable_parameters == sum(p.numel() for p in was_trainable if id(p) not in tower)
    assert locked.trainable_parameters < before.trainable_parameters
    model.save(str(tmp_path))
    loaded = st_oblique.load(str(tmp_path), device="cpu")
    reloaded = describe_model(loaded)
    assert (reloaded.trainable_parameters, reloaded.parameters) == (locked.trainable_parameters, locked.parameters)
    assert reloaded.locked_towers == [modality] and trainable_names(loaded) == trainable_names(model)
    assert f"{modality} (frozen, kept in eval mode)" in reloaded.to_text()


def tower_in_eval_mode(kind: str, model) -> torch.nn.Module:
    """The module of each case's locked tower that is kept in eval mode (as ``st-oblique train`` always did)."""
    return {
        "text": lambda: model[0].model,
        "clip": lambda: model[0].model.vision_model,
        "open_clip": lambda: model[0].model.transformer,  # the text transformer (embeddings have no modes)
        "dual": lambda: model[0].sub_modules["image"][0].model,
    }[kind]()


@pytest.mark.parametrize(("kind", "modality"), CASES)
def test_a_locked_tower_stays_in_eval_mode_while_the_rest_trains(backbones, tmp_path, kind, modality):
    model = build(kind, backbones)
    lock_tower(model, modality)
    model.save(str(tmp_path))
    for candidate in (model, st_oblique.load(str(tmp_path), device="cpu")):
        candidate.eval()
        candidate.train()  # what the trainer does at every step
        tower = tower_in_eval_mode(kind, candidate)
        assert not any(module.training for module in tower.modules())
        assert candidate[-1].training  # the oblique heads train


def test_batchnorm_statistics_of_a_locked_cnn_do_not_move(backbones):
    model = build("dual", backbones)
    lock_tower(model, "image")
    image_tower = model[0].sub_modules["image"][0]
    before = {name: value.clone() for name, value in image_tower.model.state_dict().items() if "running" in name}
    assert before
    model.train()
    features = image_tower.preprocess(tiny_images(4))
    image_tower(features)
    after = image_tower.model.state_dict()
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, atol=0, rtol=0)


def test_the_lock_is_a_config_key_written_only_when_used(backbones, tmp_path):
    model = build("dual", backbones)
    model.save(str(tmp_path / "unlocked"))
    config = json.loads((tmp_path / "unlocked" / "image_0_ImageClassTokenTransformer" / "sentence_bert_config.json").read_text())
    assert "locked_towers" not in config  # unlocked saves are as before
    lock_tower(model, "image")
    model.save(str(tmp_path / "locked"))
    config = json.loads((tmp_path / "locked" / "image_0_ImageClassTokenTransformer" / "sentence_bert_config.json").read_text())
    assert config["locked_towers"] == ["image"]
    assert st_oblique.load(str(tmp_path / "locked")).encode(SENTENCES[:2]).shape == (2, K * D)


def test_towers_that_do_not_exist_cannot_be_locked(backbones):
    text_model = build("text", backbones)
    with pytest.raises(ValueError, match="Cannot lock the image tower of a model whose first module is ClassTokenTransformer"):
        lock_tower(text_model, "image")
    with pytest.raises(ValueError, match="has no 'image' tower to lock; its towers are \\['text'\\]"):
        text_model[0].lock_towers(["image"])
    with pytest.raises(ValueError, match="a list of modalities"):
        text_model[0].lock_towers("text")
    with pytest.raises(ValueError, match="no audio tower"):
        lock_tower(build("dual", backbones), "audio")
