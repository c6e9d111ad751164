"""Bad input ends ``st-oblique`` with one line saying what and how to fix, a non-zero exit status, and nothing
written: no output folder, no staging folder left next to it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cli.cli_helpers import TINY, partial_folders

import st_oblique
from st_oblique.app.train_config import TrainConfig
from st_oblique.app.train_pipeline import train

UNWRITABLE_PARENT = Path("/sys/st-oblique-test")  # sysfs refuses new folders even to root
"""Where an output folder cannot be created (a chmod'ed folder does not stop root, which runs CI here)."""


def text_args(assets, output, *extra, data=None):
    data = data or ["--pairs", assets.pairs]
    return ["train", "--backbone", "text", "--model", assets.bert, *data, *TINY, "--max-steps", 1,
            "--output-dir", output, *extra]


def image_args(assets, output, *extra):
    return ["train", "--backbone", "open_clip", "--open-clip-config", assets.open_clip_config, *TINY,
            "--max-steps", 1, "--output-dir", output, *extra]


CASES = {
    "unknown backbone kind": (
        lambda a, o: text_args(a, o, "--backbone", "resnet"), "invalid choice: 'resnet'"),
    "missing backbone": (
        lambda a, o: ["train", "--pairs", a.pairs, "--output-dir", o], "Choose a backbone: --backbone"),
    "unknown local backbone": (
        lambda a, o: text_args(a, o, "--model", "./no/such/model"), "--model ./no/such/model: no such folder"),
    "unknown Hub backbone (offline)": (
        lambda a, o: text_args(a, o, "--model", "no-such-user/no-such-model"),
        "Cannot load the model 'no-such-user/no-such-model': there is no such folder"),  # at once (hub_access)
    "wrong kind of backbone": (
        lambda a, o: ["train", "--backbone", "clip", "--model", a.bert, "--dataset", a.hf_dataset, *TINY,
                      "--output-dir", o], "needs a Hugging Face CLIP model"),
    "unknown open_clip architecture": (
        lambda a, o: ["train", "--backbone", "open_clip", "--model", "NoSuchArch", "--pairs", a.pairs, *TINY,
                      "--output-dir", o], "Model config for 'NoSuchArch' not found"),
    "missing columns": (
        lambda a, o: image_args(a, o, "--dataset", a.hf_dataset, "--columns", "image", "text"),
        "has no column(s) ['text']; its columns are ['image', 'caption']"),
    "caption table without the columns": (
        lambda a, o: image_args(a, o, "--captions", a.captions, "--images", a.images_tar, "--columns", "file", "text"),
        "needs columns 'file' and 'text'"),
    "unreadable image": (
        lambda a, o: image_args(a, o, "--captions", a.captions, "--images", a.broken_tar),
        "1 of 6 images named in"),
    "images missing from the folder": (
        lambda a, o: image_args(a, o, "--captions", a.captions, "--images", a.pairs.parent / "no_images"),
        "Images not found"),
    "empty dataset": (
        lambda a, o: text_args(a, o, data=["--pairs", a.pairs.parent / "empty.tsv"]), "has no rows"),
    "images for a text backbone": (
        lambda a, o: text_args(a, o, data=["--dataset", a.hf_dataset]), "embeds only text"),
    "no training data": (
        lambda a, o: ["train", "--backbone", "text", "--model", a.bert, "--output-dir", o], "Give training data"),
    "two data sources": (
        lambda a, o: text_args(a, o, "--captions", a.captions, "--images", a.images_tar), "in one way"),
    "unknown evaluation set": (
        lambda a, o: text_args(a, o, "--eval-dataset", "no_such_set"), "Unknown dataset 'no_such_set'"),
    "not a checkpoint": (
        lambda a, o: text_args(a, o, "--resume-from-checkpoint", a.pairs.parent), "is not a complete training checkpoint"),
    "bad option value": (
        lambda a, o: text_args(a, o, "--num-tokens", "many"), "argument --num-tokens: invalid int value"),
    "non-positive option": (
        lambda a, o: text_args(a, o, "--token-dim", 0), "--token-dim must be a positive whole number"),
    "unwritable output folder": (
        lambda a, o: text_args(a, UNWRITABLE_PARENT / "run"), "choose another output folder"),
}


@pytest.fixture(scope="module")
def empty_table(assets):
    path = assets.pairs.parent / "empty.tsv"
    path.write_text("anchor\tpositive\n")
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_nothing_written(case, cli, assets, empty_table, tmp_path):
    make_args, expected = CASES[case]
    output = tmp_path / "runs" / "out"
    result = cli(*make_args(assets, output))
    assert result.code == 2, result
    assert len(result.error_lines) == 1, result.err
    line = result.error_lines[0]
    assert line.startswith("st-oblique train: error: ") and expected in line, line
    assert not output.exists()
    assert not (tmp_path / "runs").exists() or partial_folders(tmp_path / "runs") == []


def test_existing_output_folder_is_kept(cli, assets, tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    result = cli(*text_args(assets, output))
    assert result.code == 2 and "exists and is not empty" in result.error_lines[0] and "--overwrite" in result.err
    assert [path.name for path in output.iterdir()] == ["keep.txt"]
    assert partial_folders(tmp_path) == []


def test_incompatible_checkpoint(cli, assets, text_run, tmp_path):
    """A checkpoint of a model with another K is refused before training, naming the option."""
    output = tmp_path / "resumed"
    checkpoints = text_run.with_name(text_run.name + "-checkpoints")
    result = cli(*text_args(assets, output, "--num-tokens", 2, "--resume-from-checkpoint", "last",
                            "--checkpoint-dir", checkpoints, "--max-steps", 6))
    assert result.code == 2, result.err
    assert "num_tokens=4 there but 2 here" in result.error_lines[0] and "checkpoint-4" in result.error_lines[0]
    assert not output.exists() and partial_folders(tmp_path) == []
    # the same settings resume and continue to step 6
    result = cli("train", "--config", text_run / "train_config.yaml", "--resume-from-checkpoint", "last",
                 "--checkpoint-dir", checkpoints, "--max-steps", 6, "--save-steps", "none", "--output-dir", output)
    assert result.code == 0, result.err
    assert "for 6 steps" in result.out


def test_checkpoint_with_other_tensors_is_refused(cli, assets, text_run, tmp_path):
    """Without a train_config.yaml in the checkpoint, the tensors are compared."""
    checkpoint = tmp_path / "checkpoint-4"
    shutil.copytree(text_run.with_name(text_run.name + "-checkpoints") / "checkpoint-4", checkpoint)
    (checkpoint / "train_config.yaml").unlink()
    result = cli(*text_args(assets, tmp_path / "out", "--token-dim", 4, "--resume-from-checkpoint", checkpoint))
    assert result.code == 2, result.err
    assert "it holds another model" in result.error_lines[0] and "has 'heads.default.projection'" in result.error_lines[0]


def test_failure_after_training_leaves_nothing(assets, tmp_path):
    """The latest failure point (after training, evaluation and saving, before the move) leaves nothing."""
    config = TrainConfig(backbone="text", model=assets.bert, pairs=str(assets.pairs), num_tokens=4, token_dim=8,
                         batch_size=4, max_steps=1, progress=False, output_dir=str(tmp_path / "run"))
    seen = []

    def fail(result):
        seen.append(sorted(path.name for path in result.output_dir.iterdir()))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        train(config, before_commit=fail)
    assert "modules.json" in seen[0] and "training_report.json" in seen[0]  # it failed with everything written
    assert list(tmp_path.iterdir()) == []


def test_usage_and_config_file_errors(cli, tmp_path):
    result = cli("train", "--config", tmp_path / "missing.yaml")
    assert result.code == 2 and result.error_lines == [f"st-oblique train: error: Config file not found: {tmp_path / 'missing.yaml'}"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_tokens: [1\n")
    result = cli("train", "--config", bad)
    assert result.code == 2 and "is not valid YAML" in result.error_lines[0]
    bad.write_text("num_tokenz: 4\n")
    result = cli("train", "--config", bad)
    assert result.code == 2 and "Unknown option 'num_tokenz'" in result.error_lines[0] and "num_tokens" in result.err
    result = cli("trian")
    assert result.code == 2 and "invalid choice: 'trian'" in result.err and len(result.err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(cli, assets, tmp_path):
    with pytest.raises(st_oblique.ObliqueLoadError):
        cli(*text_args(assets, tmp_path / "out", "--model", "./no/such/model", "--debug"))


@pytest.mark.skipif(os.name != "posix", reason="uses /sys")
def test_unwritable_location_is_really_unwritable():
    with pytest.raises(OSError):
        UNWRITABLE_PARENT.mkdir()


def test_model_description_names_an_open_clip_config_architecture(tmp_path):
    config = TrainConfig(backbone="open_clip", open_clip_config=str(tmp_path / "tiny-vit.json"))
    assert config.model_description == "open_clip tiny-vit"
    assert TrainConfig(backbone="open_clip", model="ViT-B-32", pretrained="openai").model_description == (
        "open_clip ViT-B-32 (openai)"
    )
