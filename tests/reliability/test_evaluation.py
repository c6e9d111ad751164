"""``st-oblique eval`` with several models: every model is checked before the first forward pass, and records are
written through a staging folder, so a failure leaves the output folder exactly as it was."""

from __future__ import annotations

import shutil

import pytest
from reliability.reliability_helpers import damaged_copy, digest, leftovers, poison_tensor, run_cli, truncate
from tiny_models import tiny_data_root

from st_oblique.errors import ObliqueLoadError
from st_oblique.evaluation import run_evaluation


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_data_root(tmp_path_factory.mktemp("eval_data"))


def eval_args(models, output, data_root):
    args = ["eval"]
    for model in models:
        args += ["--model", model]
    return [*args, "--mteb-task", "LocalSTSBenchmark", "--data-root", data_root, "--no-progress", "--output-dir", output]


def test_damaged_later_model_fails_before_any_evaluation(saved_model, tmp_path, data_root, capsys):
    broken = damaged_copy(saved_model.path, tmp_path / "broken", lambda f: truncate(f / "tokenizer.json"))
    output = tmp_path / "results"
    result = run_cli(capsys, *eval_args([f"good={saved_model.path}", f"bad={broken}"], output, data_root))
    assert result.code == 2, result.err
    assert result.error_lines == [
        f"st-oblique eval: error: Cannot evaluate the model {broken}: {broken}/tokenizer.json is not valid JSON "
        + result.error_lines[0].split("is not valid JSON ", 1)[1]
    ]
    assert "download or save the model again" in result.error_lines[0]
    assert not (output / "records").exists() and leftovers(tmp_path) == []


def test_later_model_failing_to_load_leaves_earlier_results_untouched(saved_model, tmp_path, data_root, capsys):
    """A model that only fails when loaded (NaN weights) after a first model was evaluated: the existing output
    folder keeps its previous content byte for byte, and no records without a summary appear."""
    output = tmp_path / "results"
    first = run_cli(capsys, *eval_args([f"good={saved_model.path}"], output, data_root))
    assert first.code == 0, first.err
    before = digest(output)
    nan = damaged_copy(saved_model.path, tmp_path / "nan", lambda f: poison_tensor(f / "model.safetensors", float("nan")))
    result = run_cli(capsys, *eval_args([f"again={saved_model.path}", f"nan={nan}"], output, data_root))
    assert result.code == 2, result.err
    assert f"Cannot load the model {nan}: the tensor" in result.error_lines[0] and "NaN" in result.error_lines[0]
    assert digest(output) == before
    assert leftovers(tmp_path) == [] and leftovers(output) == []


def test_python_run_evaluation_checks_models_first(saved_model, tmp_path, data_root):
    broken = damaged_copy(saved_model.path, tmp_path / "broken", lambda f: shutil.rmtree(f / "1_ObliquePooling"))
    with pytest.raises(ObliqueLoadError, match=r"Cannot evaluate the model .*/broken: .*/broken/1_ObliquePooling is missing"):
        run_evaluation([str(saved_model.path), str(broken)], mteb_tasks=["LocalSTSBenchmark"], data_root=data_root,
                       output_dir=tmp_path / "out", show_progress_bar=False)
    assert not (tmp_path / "out").exists()


def test_two_models_with_one_name(saved_model, tmp_path, data_root):
    with pytest.raises(ValueError, match="Two models are named alike"):
        run_evaluation([f"m={saved_model.path}", f"m={saved_model.path}"], mteb_tasks=["LocalSTSBenchmark"],
                       data_root=data_root, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_empty_model_folder(tmp_path, data_root, capsys):
    (tmp_path / "empty").mkdir()
    result = run_cli(capsys, *eval_args([str(tmp_path / "empty")], tmp_path / "out", data_root))
    assert result.code == 2 and "no modules.json" in result.error_lines[0]
    assert not (tmp_path / "out").exists()
