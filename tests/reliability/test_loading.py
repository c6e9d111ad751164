"""Loading a damaged, incomplete or misnamed model: one ObliqueLoadError naming the file, what is wrong and what to
do, from Python (``st_oblique.load``) and from the command line (``st-oblique info``, exit status 2); the files
are never modified."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from reliability.reliability_helpers import damaged_copy, digest, edit_json, poison_tensor, run_cli, truncate

import st_oblique
from st_oblique.errors import ObliqueLoadError

POOL = "1_ObliquePooling"


def _modules_not_a_list(folder):
    (folder / "modules.json").write_text('{"idx": 0}')


def _remove_pooling_folder(folder):
    shutil.rmtree(folder / POOL)


DAMAGES = {
    # name: (damage, [expected fragments]; "{f}" is the damaged copy's absolute path)
    "modules.json syntax error": (
        lambda f: (f / "modules.json").write_text('[{"idx": 0,'),
        ["{f}/modules.json is not valid JSON", "download or save the model again"]),
    "modules.json empty": (
        lambda f: (f / "modules.json").write_text(""), ["{f}/modules.json is not valid JSON (it is empty)"]),
    "modules.json not a list": (_modules_not_a_list, ["{f}/modules.json must be a JSON list of modules"]),
    "module folder missing": (
        _remove_pooling_folder, [f"Cannot load ObliquePooling: {{f}}/{POOL}/config.json is missing", "incomplete"]),
    "sentence_bert_config.json syntax error": (
        lambda f: (f / "sentence_bert_config.json").write_text('{"max_seq_length": '),
        ["{f}/sentence_bert_config.json is not valid JSON"]),
    "config_sentence_transformers.json syntax error": (
        lambda f: truncate(f / "config_sentence_transformers.json"),
        ["{f}/config_sentence_transformers.json is not valid JSON"]),
    "backbone config.json syntax error": (
        lambda f: (f / "config.json").write_text('{"model_type": '), ["{f}/config.json is not valid JSON"]),
    "backbone weights truncated": (
        lambda f: truncate(f / "model.safetensors"),
        ["{f}/model.safetensors is not a readable safetensors file", "truncated or corrupted"]),
    "backbone weights garbage": (
        lambda f: (f / "model.safetensors").write_bytes(b"<html>not found</html>" * 4),
        ["{f}/model.safetensors is not a readable safetensors file"]),
    "backbone weights missing": (
        lambda f: (f / "model.safetensors").unlink(),
        ["{f} holds the backbone's config.json but no weight file", "incomplete"]),
    "tokenizer.json truncated": (
        lambda f: truncate(f / "tokenizer.json"), ["{f}/tokenizer.json is not valid JSON"]),
    "tokenizer_config.json syntax error": (
        lambda f: (f / "tokenizer_config.json").write_text("{'single': 'quotes'}"),
        ["{f}/tokenizer_config.json is not valid JSON"]),
    "pooling config syntax error": (
        lambda f: (f / POOL / "config.json").write_text("{"),
        [f"Cannot load ObliquePooling: {{f}}/{POOL}/config.json is not valid JSON"]),
    "pooling config missing a required key": (
        lambda f: edit_json(f / POOL / "config.json", lambda c: c.pop("in_features")),
        [f"{{f}}/{POOL}/config.json lacks the required key(s) ['in_features']"]),
    "pooling config missing num_tokens": (
        lambda f: edit_json(f / POOL / "config.json", lambda c: c.pop("num_tokens")),
        [f"{{f}}/{POOL}/config.json lacks 'num_tokens' (the default 16 was used)", "do not fit",
         "(4, 32, 8) in the file but (16, 32, 8)"]),
    "pooling weights truncated": (
        lambda f: truncate(f / POOL / "model.safetensors"),
        [f"{{f}}/{POOL}/model.safetensors is not a readable safetensors file"]),
    "pooling weights missing": (
        lambda f: (f / POOL / "model.safetensors").unlink(), [f"{{f}}/{POOL}/model.safetensors is missing"]),
    "NaN in the backbone weights": (
        lambda f: poison_tensor(f / "model.safetensors", float("nan")),
        ["the tensor 'embeddings.LayerNorm.bias' (32,) in {f}/model.safetensors holds 1 NaN", "every embedding would be NaN"]),
    "inf in the pooling weights": (
        lambda f: poison_tensor(f / POOL / "model.safetensors", float("inf")),
        [f"Cannot load {{f}}/{POOL}/model.safetensors: its tensor", "1 infinite value(s)"]),
    "empty folder": (
        lambda f: [shutil.rmtree(f), f.mkdir()], ["Cannot load the model {f}: the folder is empty"]),
    "folder without model files": (
        lambda f: [shutil.rmtree(f), f.mkdir(), (f / "notes.txt").write_text("x")],
        ["{f}: the folder holds no model (no modules.json or config.json; found notes.txt)"]),
    "the parent of the model folder": (
        lambda f: [shutil.move(str(f), str(f) + "-inner"), f.mkdir(), shutil.move(str(f) + "-inner", f / "inner")],
        ["the folder holds no model", "It holds a model in {f}/inner: pass that folder"]),
}


@pytest.fixture
def damaged(saved_model, tmp_path):
    def make(case):
        damage, fragments = DAMAGES[case]
        folder = damaged_copy(saved_model.path, tmp_path / "model", damage)
        return folder, [fragment.format(f=folder) for fragment in fragments]

    return make


@pytest.mark.parametrize("case", list(DAMAGES))
def test_python_load_names_the_file(case, damaged):
    folder, fragments = damaged(case)
    before = digest(folder)
    with pytest.raises(ObliqueLoadError) as raised:
        st_oblique.load(str(folder))
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, message
    assert str(folder).startswith("/") and f"{folder}" in message  # absolute paths keep their leading "/"
    assert "\n" not in message
    assert digest(folder) == before


CLI_CASES = [
    "modules.json syntax error", "backbone weights truncated", "backbone weights missing", "tokenizer.json truncated",
    "pooling config missing num_tokens", "NaN in the backbone weights",
]


@pytest.mark.parametrize("case", CLI_CASES)
def test_info_command_exits_2_with_one_line(case, damaged, capsys):
    folder, fragments = damaged(case)
    before = digest(folder)
    result = run_cli(capsys, "info", folder)
    assert result.code == 2, result
    assert len(result.error_lines) == 1 and result.error_lines[0].startswith("st-oblique info: error: "), result.err
    for fragment in fragments:
        assert fragment in result.error_lines[0]
    assert digest(folder) == before


def test_info_on_an_empty_folder(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    result = run_cli(capsys, "info", tmp_path / "model")
    assert result.code == 2 and result.error_lines == [
        f"st-oblique info: error: {tmp_path}/model is not a saved Sentence Transformers model (no modules.json)."
    ]
    assert list((tmp_path / "model").iterdir()) == []


def test_misspelt_folder_that_looks_like_a_hub_id_offline(saved_model, tmp_path, monkeypatch):
    shutil.copytree(saved_model.path, tmp_path / "runs" / "my-model")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ObliqueLoadError) as raised:
        st_oblique.load("runs/my-modle", local_files_only=True)
    message = str(raised.value)
    assert "Cannot load the model 'runs/my-modle': there is no such folder (relative to" in message
    assert "not in the cache" in message and "while downloads are off (local_files_only=True)" in message
    assert "did you mean runs/my-model?" in message


def test_misspelt_absolute_path_suggests_the_sibling(saved_model, tmp_path):
    shutil.copytree(saved_model.path, tmp_path / "oblique-model")
    with pytest.raises(ObliqueLoadError, match=rf"Cannot load the model '{tmp_path}/oblique-modle': there is no such "
                       rf"folder\. Did you mean {tmp_path}/oblique-model\?"):
        st_oblique.load(str(tmp_path / "oblique-modle"))


def test_a_file_is_not_a_model_folder(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"x")
    with pytest.raises(ObliqueLoadError, match="it is a file, not a model folder"):
        st_oblique.load(str(path))


def test_relative_path_keeps_its_form(saved_model, tmp_path, monkeypatch):
    """Messages show the path as the user typed it (relative stays relative, no '/' lost or added)."""
    damaged_copy(saved_model.path, tmp_path / "m", lambda f: truncate(f / "tokenizer.json"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ObliqueLoadError, match=r"^Cannot load the model m: m/tokenizer\.json is not valid JSON"):
        st_oblique.load("m")


def test_intact_copy_still_loads_identically(saved_model, tmp_path):
    """The checks refuse nothing that is intact: the same embeddings as before saving."""
    import torch
    from tiny_models import SENTENCES

    folder = damaged_copy(saved_model.path, tmp_path / "model", lambda f: None)
    loaded = st_oblique.load(str(folder))
    torch.testing.assert_close(loaded.encode(SENTENCES, convert_to_tensor=True), saved_model.embeddings, atol=1e-6, rtol=0)


def test_plain_sentence_transformers_gets_the_module_messages(saved_model, tmp_path):
    """Without st-oblique's loader (plain ST, trust_remote_code) the module files are still checked by the modules."""
    from sentence_transformers import SentenceTransformer

    folder = damaged_copy(saved_model.path, tmp_path / "model", lambda f: poison_tensor(f / POOL / "model.safetensors", float("nan")))
    with pytest.raises(ObliqueLoadError, match=rf"Cannot load {folder}/{POOL}/model\.safetensors: its tensor .* NaN"):
        SentenceTransformer(str(folder), trust_remote_code=True)


@pytest.mark.skipif(os.name != "posix", reason="posix paths")
def test_describe_location_keeps_the_leading_slash():
    from st_oblique.modules.serialization import describe_location

    assert describe_location("/models/x/", "1_ObliquePooling/", "config.json") == "/models/x/1_ObliquePooling/config.json"
    assert describe_location("user/repo", "", "config.json") == "user/repo/config.json"
    assert json.dumps(describe_location("/", "", "a.json")) == '"/a.json"'
