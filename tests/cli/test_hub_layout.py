"""Models laid out as on the Hub load wherever Sentence Transformers loads them.

A Hub repository is a git repository, and git keeps no empty folders: a module that saves no files has no folder
there. ``Normalize`` saved nothing before Sentence Transformers 5, so ``sentence-transformers/all-MiniLM-L6-v2`` (and
many models like it) lists ``2_Normalize`` in ``modules.json`` and has no such folder; ``SentenceTransformer(...)``
loads it with Normalize's defaults. st-oblique's commands and loader must accept the same folders, plain and oblique
(``hub_layout`` makes the layout from a saved model), and still name a missing folder that a module does need.
The same folders served by a real Hub server: tests/hub/test_olah_download.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling
from tiny_models import SENTENCES

import st_oblique
from st_oblique.errors import ObliqueLoadError
from st_oblique.evaluation import register_mteb_model
from st_oblique.model.files import find_damaged_file

K, D = 4, 8


def hub_layout(folder: Path, target: Path) -> Path:
    """A copy of the saved model ``folder`` as its Hub repository holds it: no folder for the modules that save no
    files (Normalize, as every Sentence Transformers before 5 saved it) and no empty folders (git keeps none)."""
    shutil.copytree(folder, target)
    for entry in json.loads((target / "modules.json").read_text()):
        if entry["type"].endswith(".Normalize") and entry["path"]:
            shutil.rmtree(target / entry["path"])
    for path in sorted((p for p in target.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()
    return target


@pytest.fixture(scope="module")
def plain_model(tiny_bert_dir, tmp_path_factory) -> Path:
    """A plain Sentence Transformers model (Transformer, Pooling, Normalize) in the Hub layout: no 2_Normalize."""
    root = tmp_path_factory.mktemp("hub_layout")
    transformer = Transformer(tiny_bert_dir)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension()), Normalize()])
    model.save(str(root / "saved"))
    folder = hub_layout(root / "saved", root / "plain")
    assert [entry["path"] for entry in json.loads((folder / "modules.json").read_text())][2] == "2_Normalize"
    assert not (folder / "2_Normalize").exists()
    return folder


@pytest.fixture(scope="module")
def oblique_model(tiny_bert_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub_layout")
    torch.manual_seed(0)
    st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D).save(str(root / "saved"))
    return hub_layout(root / "saved", root / "oblique")


def test_the_loaders_accept_a_model_without_its_normalize_folder(plain_model):
    reference = SentenceTransformer(str(plain_model)).encode(SENTENCES)
    np.testing.assert_array_equal(st_oblique.load(str(plain_model)).encode(SENTENCES), reference)
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, rtol=1e-5)  # Normalize ran, with defaults
    assert find_damaged_file(plain_model) is None


def test_a_missing_folder_a_module_needs_is_still_named(plain_model, tmp_path):
    broken = shutil.copytree(plain_model, tmp_path / "broken")
    shutil.rmtree(broken / "1_Pooling")  # Pooling cannot load without its config: ST fails on this folder too
    with pytest.raises(Exception):  # noqa: B017 - whatever Sentence Transformers raises
        SentenceTransformer(str(broken))
    assert find_damaged_file(broken).startswith(f"{broken / '1_Pooling'} is missing")
    with pytest.raises(ObliqueLoadError, match="1_Pooling"):
        st_oblique.load(str(broken))


def test_eval_and_mteb_registration_of_a_plain_model(cli, plain_model, assets, tmp_path):
    result = cli("eval", "--model", f"plain={plain_model}", "--mteb-task", "LocalSTSBenchmark", "--data-root",
                 assets.data_root, "--no-progress", "--output-dir", tmp_path / "eval")
    assert result.code == 0, result.err
    assert (tmp_path / "eval" / "summary.json").is_file()
    meta = register_mteb_model(plain_model, name="tests/plain-hub-layout")
    assert meta.embed_dim == 32 and meta.name == "tests/plain-hub-layout"


def test_train_on_a_plain_model(cli, plain_model, assets, tmp_path):
    for backbone in (["--backbone", "text", "--model", plain_model],
                     ["--backbone", "dual", "--text-model", plain_model, "--image-model", assets.vit]):
        data = ["--pairs", assets.pairs] if backbone[1] == "text" else ["--captions", assets.captions, "--images",
                                                                       assets.images_tar]
        output = tmp_path / backbone[1]
        result = cli("train", *backbone, *data, "--num-tokens", K, "--token-dim", D, "--batch-size", 4,
                     "--max-steps", 1, "--no-progress", "--output-dir", output)
        assert result.code == 0, result.err
        assert st_oblique.load(str(output)).encode(SENTENCES[:2]).shape == (2, K * D)


def test_info_and_explain_say_a_plain_model_is_not_oblique(cli, plain_model):
    for args in (["info", plain_model], ["explain", plain_model, "--text", "a dog", "--text", "a cat"]):
        result = cli(*args)
        assert result.code == 2 and "ObliquePooling" in result.err and "missing" not in result.err, result.err


def test_every_command_on_an_oblique_model(cli, oblique_model, assets, tmp_path):
    assert cli("info", oblique_model, "--data", "builtin").code == 0
    explained = cli("explain", oblique_model, "--text", "a dog", "--text", "a cat", "--json")
    assert explained.code == 0 and len(json.loads(explained.out)["contributions"]) == K
    result = cli("eval", "--model", f"oblique={oblique_model}", "--mteb-task", "LocalSTSBenchmark", "--data-root",
                 assets.data_root, "--no-progress", "--output-dir", tmp_path / "eval")
    assert result.code == 0, result.err
    assert register_mteb_model(oblique_model, name="tests/oblique-hub-layout").embed_dim == [K * D, K * D // 2, D]


def test_eval_of_all_minilm_l6_v2_as_published(cli, shared, assets, tmp_path):
    folder = shared / "weights" / "all-MiniLM-L6-v2"
    assert "2_Normalize" in (folder / "modules.json").read_text() and not (folder / "2_Normalize").exists()
    result = cli("eval", "--model", f"minilm={folder}", "--mteb-task", "LocalSTSBenchmark", "--data-root",
                 assets.data_root, "--no-progress", "--output-dir", tmp_path / "eval")
    assert result.code == 0, result.err
