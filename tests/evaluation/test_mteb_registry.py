"""mteb's own entry points on st-oblique models: ``register_mteb_model`` + ``mteb.get_model`` / ``mteb.evaluate`` give
the scores of the project's own mteb wrapper, and ``st-oblique mteb run`` (mteb's CLI, run in-process on an offline
task registered by the command) gives the scores of ``st-oblique eval --mteb-task``."""

from __future__ import annotations

import json
from pathlib import Path

import mteb
import numpy as np
import pytest
import torch
from mteb.models.model_meta import ScoringFunction
from sentence_transformers import SentenceTransformer
from tiny_models import SENTENCES, tiny_images

import st_oblique
from st_oblique.app.cli import main
from st_oblique.evaluation import mteb_model, register_mteb_model
from st_oblique.evaluation.mteb_tasks import LocalSciFact, LocalSTSBenchmark

K, D = 4, 8


@pytest.fixture(scope="module")
def oblique_text_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("registry") / "oblique-text"
    st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=K, token_dim=D).save(str(folder))
    return folder


@pytest.fixture(scope="module")
def oblique_clip_dir(oblique_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("registry") / "oblique-clip"
    oblique_model.save(str(folder))
    return folder


def scores(model, tasks) -> dict[str, float]:
    result = mteb.evaluate(model, tasks, cache=None, show_progress_bar=False, co2_tracker=False, raise_error=True)
    return {task_result.task_name: float(task_result.get_score()) for task_result in result.task_results}


def test_registered_folder_scores_equal_the_project_wrapper(oblique_text_dir, data_root):
    meta = register_mteb_model(oblique_text_dir, name="tests/oblique-text")
    tasks = [LocalSTSBenchmark(data_root=data_root), LocalSciFact(data_root=data_root)]

    through_get_model = scores(mteb.get_model(meta.name), tasks)
    through_meta = scores(meta, tasks)
    own_wrapper = scores(mteb_model(st_oblique.load(str(oblique_text_dir)), name="tests/oblique-text"), tasks)

    assert set(own_wrapper) == {"LocalSTSBenchmark", "LocalSciFact"}
    assert through_get_model == pytest.approx(own_wrapper, abs=1e-12)
    assert through_meta == pytest.approx(own_wrapper, abs=1e-12)
    assert own_wrapper["LocalSTSBenchmark"] != 0.0  # a real score, not a constant


def test_meta_describes_an_image_text_oblique_model(oblique_clip_dir, oblique_model):
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(oblique_clip_dir))  # what mteb's own Hub loader would do
    meta = register_mteb_model(oblique_clip_dir)

    assert meta.name == "local/oblique-clip" and meta.revision.startswith("w-")
    assert meta.modalities == ["image", "text"]
    assert meta.similarity_fn_name == ScoringFunction.DOT_PRODUCT
    assert meta.embed_dim == [K * D, (K // 2) * D, D]  # whole-token truncations
    assert meta.n_parameters == sum(p.numel() for p in oblique_model.parameters())
    expected_mb = sum(t.numel() * t.element_size() for t in oblique_model.state_dict().values()) / 2**20
    assert meta.memory_usage_mb == pytest.approx(expected_mb, abs=0.01)
    assert mteb.get_model_meta(meta.name) is meta

    full = mteb.get_model(meta.name).model
    half = mteb.get_model(meta.name, embed_dim=(K // 2) * D)
    assert half.mteb_model_meta.embed_dim == (K // 2) * D
    images = tiny_images(2)
    for inputs in (SENTENCES[:3], [{"image": image} for image in images]):
        expected = full.encode(inputs, convert_to_numpy=True)[:, : (K // 2) * D]
        np.testing.assert_allclose(half.model.encode(inputs, convert_to_numpy=True), expected, atol=1e-6)
    with pytest.raises(ValueError, match="not in the model's supported embedding dimensions"):
        mteb.get_model(meta.name, embed_dim=D + D // 2)  # would cut a token


def test_model_object_registration(oblique_model):
    with pytest.raises(ValueError, match="organization/model_name"):
        register_mteb_model(oblique_model)  # its card has no "org/name" name
    meta = register_mteb_model(oblique_model, name="tests/in-memory", revision="v1")
    assert meta.revision == "v1"

    loaded = mteb.get_model("tests/in-memory", revision="v1")
    assert loaded.model is oblique_model
    truncated = mteb.get_model("tests/in-memory", embed_dim=D)
    assert truncated.model.truncate_dim == D and oblique_model.truncate_dim is None  # the object is not changed
    embeddings = truncated.model.encode(SENTENCES[:2], convert_to_numpy=True)
    np.testing.assert_allclose(embeddings, oblique_model.encode(SENTENCES[:2], convert_to_numpy=True)[:, :D], atol=1e-6)


def test_registration_never_replaces_mteb_own_models(oblique_text_dir):
    name = "sentence-transformers/all-MiniLM-L6-v2"
    original = mteb.get_model_meta(name)
    with pytest.raises(ValueError, match="one of mteb's own models"):
        register_mteb_model(oblique_text_dir, name=name)
    assert mteb.get_model_meta(name) is original
    with pytest.raises(ValueError, match="organization/model_name"):
        register_mteb_model(oblique_text_dir, name="no-organization")


def test_st_oblique_mteb_run_equals_st_oblique_eval(oblique_text_dir, data_root, tmp_path, capsys):
    """``st-oblique mteb run`` is mteb's own CLI (run in-process) after registering the folder and the offline tasks;
    its saved score equals ``st-oblique eval --mteb-task`` on the same task."""
    mteb_out = tmp_path / "mteb_results"
    status = main(
        [
            "mteb",
            "--data-root",
            str(data_root),
            "run",
            "-m",
            str(oblique_text_dir),
            "-t",
            "LocalSTSBenchmark",
            "--output-folder",
            str(mteb_out),
            "--no-co2-tracker",
            "-v",
            "0",
        ]
    )
    assert status == 0
    printed = capsys.readouterr()
    assert "registered in mteb as local/oblique-text" in printed.out
    (result_file,) = mteb_out.glob("results/local__oblique-text/*/LocalSTSBenchmark.json")
    mteb_score = json.loads(result_file.read_text())["scores"]["test"][0]["main_score"]
    # at the end: where the JSON went and the main score of each task; on the way: a bar over the encodings
    assert f"local/oblique-text (revision {result_file.parent.name}), results in {result_file.parent}/" in printed.out
    assert f"LocalSTSBenchmark  main score (cosine_spearman) {mteb_score:.4f}  LocalSTSBenchmark.json" in printed.out
    assert "Batches: 100%" in printed.err

    eval_out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                str(oblique_text_dir),
                "--mteb-task",
                "LocalSTSBenchmark",
                "--data-root",
                str(data_root),
                "--output-dir",
                str(eval_out),
                "--no-progress",
            ]
        )
        == 0
    )
    (record,) = json.loads((eval_out / "summary.json").read_text())["results"]
    assert mteb_score == pytest.approx(record["metrics"]["main_score"], abs=1e-6)  # mteb's JSON keeps 6 decimals
    assert result_file.parent.name == record["pretrained"]  # the same revision: the weights' fingerprint


def test_st_oblique_mteb_no_progress_hides_the_bars(oblique_text_dir, data_root, tmp_path, capsys):
    arguments = ["--data-root", str(data_root), "run", "-m", str(oblique_text_dir), "-t", "LocalSTSBenchmark",
                 "--output-folder", str(tmp_path), "--no-co2-tracker", "-v", "0"]
    assert main(["mteb", "--no-progress", *arguments]) == 0
    printed = capsys.readouterr()
    assert "Batches" not in printed.err and "LocalSTSBenchmark  main score" in printed.out


def test_st_oblique_mteb_reports_bad_arguments(capsys):
    assert main(["mteb", "run", "--no-such-option"]) == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    assert main(["mteb"]) == 2
