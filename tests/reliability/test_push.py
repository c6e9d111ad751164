"""Pushing never modifies the local folder, and a folder that cannot be pushed says why before anything is sent."""

from __future__ import annotations

import pytest
from reliability.reliability_helpers import damaged_copy, digest, poison_tensor, run_cli, truncate

import st_oblique
from st_oblique.errors import HubPushError, ObliqueLoadError


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: truncate(f / "model.safetensors"), "model.safetensors is not a readable safetensors file"),
        (lambda f: poison_tensor(f / "model.safetensors", float("inf")), r"1 infinite value\(s\)"),
        (lambda f: (f / "modules.json").write_text("["), "modules.json is not valid JSON"),
    ],
    ids=["truncated weights", "inf weights", "modules.json syntax"],
)
def test_damaged_folder_is_not_pushed(damage, expected, saved_model, tmp_path):
    folder = damaged_copy(saved_model.path, tmp_path / "model", damage)
    before = digest(folder)
    with pytest.raises(ObliqueLoadError, match=expected):
        st_oblique.push_to_hub(folder, "user/oblique", token="hf_x")
    assert digest(folder) == before


def test_cli_push_of_a_damaged_folder(saved_model, tmp_path, capsys):
    folder = damaged_copy(saved_model.path, tmp_path / "model", lambda f: truncate(f / "tokenizer.json"))
    before = digest(folder)
    result = run_cli(capsys, "push", folder, "user/oblique")
    assert result.code == 2 and f"{folder}/tokenizer.json is not valid JSON" in result.error_lines[0], result.err
    assert digest(folder) == before


def test_push_offline_changes_nothing(saved_model, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = digest(saved_model.path)
    with pytest.raises(HubPushError, match=r"offline mode \(HF_HUB_OFFLINE=1\).*Nothing local was changed"):
        st_oblique.push_to_hub(saved_model.path, "user/oblique", token="hf_x")
    assert digest(saved_model.path) == before


def test_push_of_a_folder_without_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"is not a saved Sentence Transformers model \(no modules\.json\)"):
        st_oblique.push_to_hub(tmp_path, "user/oblique")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
