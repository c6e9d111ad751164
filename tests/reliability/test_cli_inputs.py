"""``st-oblique`` input mistakes that used to get a misleading message: a table whose first row is data (no header),
a single string where a list is expected in a ``--config`` file, option values reported under another option's name,
a device this machine does not have blamed on the backbone. One line on stderr naming what the user typed, exit 2,
inputs unchanged, nothing written."""

from __future__ import annotations

import argparse
import itertools

import pytest
import torch
import yaml
from reliability.reliability_helpers import TINY, digest, leftovers, run_cli
from tiny_models import SENTENCES, tiny_data_root, tiny_images

from st_oblique.app.cli import build_parser
from st_oblique.app.options import parse_args_with_config
from st_oblique.app.train_config import TrainConfig
from st_oblique.errors import ObliqueConfigError


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Tables without a header row, their images, and a Flickr-layout data root whose captions.tsv has no header."""
    root = tmp_path_factory.mktemp("headerless")
    (root / "images").mkdir()
    for index, image in enumerate(tiny_images(4, size=(32, 32), seed=1)):
        image.save(root / "images" / f"{index}.png")
    (root / "captions.tsv").write_text("".join(f"{i}.png\t{SENTENCES[i]}\n" for i in range(4)))
    (root / "captions.csv").write_text("".join(f"{i}.png,{SENTENCES[i]}\n" for i in range(4)))
    (root / "pairs.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in itertools.pairwise(SENTENCES)))
    (root / "data").mkdir()
    data = tiny_data_root(root / "data")
    table = data / "flickr8k_1k" / "captions.tsv"
    table.write_text("".join(table.read_text().splitlines(keepends=True)[1:]))  # drop its header row
    return root


def train_args(bert, output, *data):
    return ["train", "--backbone", "text", "--model", bert, *data, *TINY, "--max-steps", 1, "--output-dir", output]


def assert_refused(result, command, expected, tmp_path, output):
    assert result.code == 2, result.err
    assert len(result.error_lines) == 1 and result.error_lines[0].startswith(f"st-oblique {command}: error: ")
    assert expected in result.error_lines[0], result.error_lines[0]
    assert not output.exists() and leftovers(output.parent) == []


# -- a table whose first row is data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "data", "expected"),
    [
        ("captions.tsv", ["--captions", "{t}", "--images", "{r}/images"],
         "looks like data, not a header ('0.png' is a file name): add a header row `image<TAB>caption` as its first line."),
        ("captions.csv", ["--captions", "{t}", "--images", "{r}/images"],
         "looks like data, not a header ('0.png' is a file name): add a header row `image,caption` as its first line."),
        ("pairs.tsv", ["--pairs", "{t}"],
         "looks like data, not a header ('a man plays the guitar' is a sentence): add a header row "
         "`anchor<TAB>positive` as its first line."),
    ],
    ids=["caption tsv", "caption csv", "pairs tsv"],
)
def test_train_table_without_header(table, data, expected, tables, tiny_bert_dir, tmp_path, capsys):
    before = digest(tables)
    path = tables / table
    args = [item.format(t=path, r=tables) for item in data]
    output = tmp_path / "out"
    result = run_cli(capsys, *train_args(tiny_bert_dir, output, *args))
    assert_refused(result, "train", f"The first row of {path} {expected}", tmp_path, output)
    assert "--columns" not in result.err  # other column names cannot fix a missing header
    assert digest(tables) == before


def test_eval_caption_table_without_header(tables, image_models, tmp_path, capsys):
    model = tmp_path / "clip"
    image_models["hf_clip"].save(str(model))
    before = digest(tables / "data")
    output = tmp_path / "results"
    result = run_cli(capsys, "eval", "--model", model, "--dataset", "flickr8k_1k", "--data-root", tables / "data",
                     "--no-progress", "--output-dir", output)
    assert_refused(result, "eval", f"The first row of {tables / 'data' / 'flickr8k_1k' / 'captions.tsv'} looks like "
                   "data, not a header ('1001_a.jpg' is a file name): add a header row "
                   "`image<TAB>caption_idx<TAB>caption` as its first line.", tmp_path, output)
    assert digest(tables / "data") == before


def test_caption_table_with_other_column_names_suggests_columns(tables, tiny_bert_dir, tmp_path, capsys):
    path = tmp_path / "named.tsv"
    path.write_text("file\ttext\n0.png\ta dog\n")
    output = tmp_path / "out"
    result = run_cli(capsys, *train_args(tiny_bert_dir, output, "--captions", path, "--images", tables / "images"))
    assert_refused(result, "train", "needs columns 'image' and 'caption', found ['file', 'text']; rename them in its "
                   "header row. Or name them with --columns IMAGE_COLUMN CAPTION_COLUMN.", tmp_path, output)


# -- one string where a list is expected ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", TrainConfig.list_field_names())
def test_train_config_list_key_from_one_string(name, tmp_path):
    """Every list-typed key of the training config: one string is a one-item list (never split into characters),
    in Python and in a config file; anything but strings is refused naming the key."""
    assert getattr(TrainConfig.from_dict({name: "some value"}), name) == ["some value"]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({name: "some value"}))
    assert getattr(TrainConfig.from_file(path), name) == ["some value"]
    with pytest.raises(ObliqueConfigError, match=rf"\({name} in a config file\) takes a list of strings, got \{{"):
        TrainConfig.from_dict({name: {"a": 1}})


def _list_options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if action.option_strings and (isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")):
            yield action


LIST_OPTIONS = [(command, action.dest) for command, sub in build_parser()[1].items() for action in _list_options(sub)]


@pytest.mark.parametrize(("command", "dest"), LIST_OPTIONS, ids=[f"{c} {d}" for c, d in LIST_OPTIONS])
def test_config_file_list_option_from_one_string(command, dest, tmp_path):
    """Every repeatable or multi-value option of every command: ``key: value`` in --config is a one-item list."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({dest: "one value"}))
    parser, subparsers = build_parser()
    extra = ["MODEL"] if command in ("info", "push", "explain", "export") else []
    extra += ["--from", "x", "--output-dir", "y"] if command == "convert" else []
    try:
        args = parse_args_with_config(parser, [command, *extra, "--config", str(path)], subparsers)
    except SystemExit as error:  # a new command with required arguments: give them in `extra` above
        pytest.fail(f"st-oblique {command} {' '.join(extra)} --config ... did not parse (exit {error.code}); add its "
                    "required arguments to `extra`")
    assert getattr(args, dest) == ["one value"]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("eval_dataset: imagenette", "imagenette not found at"),  # one dataset, not ten one-letter ones
        ("columns: anchor", "--columns needs at least two columns (anchor, positive), got ['anchor']."),
        ("freeze: {heads: 1}", "--freeze (freeze in a config file) takes a list of strings, got [{'heads': 1}]"),
    ],
)
def test_train_config_file_string_for_a_list(setting, expected, tiny_bert_dir, pairs_file, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(setting + "\n")
    before = digest(pairs_file)
    output = tmp_path / "out"
    result = run_cli(capsys, "train", "--config", config,
                     *train_args(tiny_bert_dir, output, "--pairs", pairs_file)[1:], "--data-root", tmp_path)
    assert_refused(result, "train", expected, tmp_path, output)
    assert digest(pairs_file) == before


def test_freeze_one_string_in_a_config_file_trains(tiny_bert_dir, pairs_file, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("freeze: heads\n")
    output = tmp_path / "out"
    result = run_cli(capsys, "train", "--config", config, *train_args(tiny_bert_dir, output, "--pairs", pairs_file)[1:])
    assert result.code == 0, result.err
    assert yaml.safe_load((output / "train_config.yaml").read_text())["freeze"] == ["heads"]


# -- option values named as the user typed them ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["demo", "--steps", "0"], "argument --steps: must be a positive whole number, got 0"),
        (["demo", "--steps", "-1"], "argument --steps: must be a positive whole number, got -1"),
        (["demo", "--seed", "-1"], "argument --seed: must be 0 or a positive whole number, got -1"),
        (["eval", "--max-samples", "0"], "argument --max-samples: must be a positive whole number, got 0"),
        (["eval", "--batch-size", "0"], "argument --batch-size: must be a positive whole number, got 0"),
        (["eval", "--num-workers", "-1"], "argument --num-workers: must be 0 or a positive whole number, got -1"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_option_value_named_as_typed(args, expected, tmp_path, capsys):
    output = tmp_path / "out"
    result = run_cli(capsys, *args, "--output-dir", output)
    assert_refused(result, args[0], expected, tmp_path, output)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--seed", "-1"], "--seed must be a whole number from 0 to 2**32 - 1, got -1."),
        (["--dataloader-num-workers", "-1"], "--dataloader-num-workers must be 0 (load in the training process) or more"),
    ],
)
def test_train_option_named_as_typed(option, expected, tiny_bert_dir, pairs_file, tmp_path, capsys):
    output = tmp_path / "out"
    result = run_cli(capsys, *train_args(tiny_bert_dir, output, "--pairs", pairs_file), *option)
    assert_refused(result, "train", expected, tmp_path, output)


# -- a device this machine does not have ------------------------------------------------------------------------------

DEVICES = {
    "cuda": "--device cuda: no CUDA GPU is available on this machine",
    "cuda:7": "--device cuda:7: ",
    "mps": "--device mps: no Apple GPU (MPS) is available on this machine",
    "gpu": "--device gpu: not a device name",
}


@pytest.mark.parametrize("device", list(DEVICES))
@pytest.mark.parametrize("command", ["train", "eval"])
def test_unavailable_device(command, device, saved_model, tiny_bert_dir, pairs_file, tmp_path, capsys):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the GPU")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    output = tmp_path / "out"
    if command == "train":
        args = train_args(tiny_bert_dir, output, "--pairs", pairs_file)
    else:
        args = ["eval", "--model", saved_model.path, "--mteb-task", "LocalSTSBenchmark", "--output-dir", output]
    before = digest(saved_model.path)
    result = run_cli(capsys, *args, "--device", device)
    assert_refused(result, command, DEVICES[device], tmp_path, output)
    assert "devices here: cpu" in result.err or torch.cuda.is_available()
    assert "backbone" not in result.err
    assert digest(saved_model.path) == before
