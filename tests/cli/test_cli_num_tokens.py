"""``st-oblique eval --num-tokens k[,k...]``: oblique models evaluated at their first k whole tokens
(``truncate_dim=k*d``, nothing renormalized), one result per k recording ``num_tokens``; counts a model does not
have are refused before anything is written."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import SENTENCES, tiny_clip, tiny_data_root, tiny_images, tiny_oblique_clip

from st_oblique.evaluation.encoding import encode_images, encode_texts

K, D = 4, 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("num_tokens")
    model = tiny_oblique_clip(tiny_clip(root / "clip"), num_tokens=K, token_dim=D)
    model.save(str(root / "model"))
    (root / "data").mkdir()
    return model, root / "model", tiny_data_root(root / "data")


def eval_args(path, data_root, output, *extra):
    return ["eval", "--model", f"tiny={path}", "--dataset", "flickr8k_1k", "--data-root", data_root,
            "--no-progress", "--output-dir", output, *extra]


def records(output):
    return {(r["model"], r["dataset"]): r for r in (json.loads(p.read_text()) for p in (output / "records").glob("*.json"))}


def test_harness_keeps_whole_tokens_without_renormalizing(setup):
    """The harness's encoders at truncate_dim=k*d give the first k*d numbers of the full embedding, unchanged."""
    model = setup[0]
    images = tiny_images(3, size=(32, 32))
    full_text, full_image = encode_texts(model, SENTENCES), encode_images(model, images, show_progress_bar=False)
    try:
        for k in (1, 2, 3):
            model.truncate_dim = k * D
            text, image = encode_texts(model, SENTENCES), encode_images(model, images, show_progress_bar=False)
            torch.testing.assert_close(text, full_text[:, : k * D])
            torch.testing.assert_close(image, full_image[:, : k * D])
            norms = text.view(len(SENTENCES), k, D).norm(dim=-1)
            torch.testing.assert_close(norms, torch.ones_like(norms))  # each kept token is a unit vector
    finally:
        model.truncate_dim = None


def test_one_result_per_token_count(cli, setup, tmp_path):
    _, path, data_root = setup
    output = tmp_path / "results"
    result = cli(*eval_args(path, data_root, output, "--num-tokens", "1,2,4", "--mteb-task", "LocalSTSBenchmark"))
    assert result.code == 0, result.err
    found = records(output)
    for k in (1, 2, 4):
        for dataset in ("flickr8k_1k", "LocalSTSBenchmark"):
            assert found[(f"tiny k={k}", dataset)]["num_tokens"] == k
    assert "| tiny k=1 | tiny k=2 | tiny k=4 |" in (output / "results.md").read_text()
    summary = json.loads((output / "summary.json").read_text())
    assert summary["settings"]["token_counts"] == [1, 2, 4]

    full = tmp_path / "full"
    assert cli(*eval_args(path, data_root, full)).code == 0
    # all K tokens through --num-tokens K are the default evaluation
    assert found[("tiny k=4", "flickr8k_1k")]["metrics"] == records(full)[("tiny", "flickr8k_1k")]["metrics"]
    assert records(full)[("tiny", "flickr8k_1k")]["num_tokens"] == K
    # fewer tokens are another embedding: the scores change (a --num-tokens that evaluated all K each time would not)
    for dataset in ("flickr8k_1k", "LocalSTSBenchmark"):
        for k in (1, 2):
            assert found[(f"tiny k={k}", dataset)]["metrics"] != found[("tiny k=4", dataset)]["metrics"], (k, dataset)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8", "st-oblique eval: error: --num-tokens 8: tiny has 4 tokens of d=8; choose counts from 1 to 4."),
        ("0,2", "argument --num-tokens: takes whole numbers of tokens >= 1 separated by commas (e.g. 1,2,4), got '0,2'"),
        ("2,2", "argument --num-tokens: repeats a token count: '2,2'"),
        ("two", "argument --num-tokens: takes whole numbers of tokens"),
    ],
)
def test_bad_token_counts(value, expected, cli, setup, tmp_path):
    _, path, data_root = setup
    output = tmp_path / "results"
    result = cli(*eval_args(path, data_root, output, "--num-tokens", value))
    assert result.code == 2, result.err
    assert len(result.error_lines) == 1 and expected in result.error_lines[0], result.err
    assert not output.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_not_oblique_model_refused(cli, setup, tmp_path):
    _, _, data_root = setup
    clip = tiny_clip(tmp_path / "plain_clip")
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(clip).save(str(tmp_path / "plain"))
    output = tmp_path / "results"
    result = cli("eval", "--model", tmp_path / "plain", "--dataset", "flickr8k_1k", "--data-root", data_root,
                 "--no-progress", "--output-dir", output, "--num-tokens", "1")
    assert result.code == 2, result.err
    assert "--num-tokens 1: " in result.error_lines[0] and "is not an oblique model" in result.error_lines[0]
    assert not output.exists()


def test_card_rows_per_token_count_of_an_eval_run(cli, setup, tmp_path):
    """The card's table from an eval summary at several k: one row per k, the values of the records."""
    from st_oblique.model.card import format_evaluation_results

    _, path, data_root = setup
    output = tmp_path / "results"
    assert cli(*eval_args(path, data_root, output, "--num-tokens", "1,4")).code == 0
    table = format_evaluation_results(output / "summary.json")
    found = records(output)
    for k in (1, 4):
        value = found[(f"tiny k={k}", "flickr8k_1k")]["metrics"]["image_retrieval_recall@1"]
        assert f"| flickr8k_1k (zeroshot_retrieval, k={k} tokens, 6 samples) | image_retrieval_recall@1 | {value:.4f} |" in table["table"]
    single = format_evaluation_results(output / "records" / next(p.name for p in (output / "records").iterdir()))
    assert "tokens)" not in single["table"]  # one token count: no k in the labels


def test_nested_token_training_evaluates_and_cards_each_prefix(cli, assets, tmp_path):
    output = tmp_path / "nested"
    result = cli("train", "--backbone", "text", "--model", assets.bert, "--pairs", assets.pairs, "--num-tokens", 4,
                 "--token-dim", 8, "--batch-size", 4, "--no-progress", "--max-steps", 1, "--nested-tokens", "1,2,4",
                 "--mteb-task", "LocalSTSBenchmark", "--data-root", assets.data_root, "--output-dir", output)
    assert result.code == 0, result.err
    trained = json.loads((output / "training_report.json").read_text())["evaluation"]["trained"]
    assert sorted(record["num_tokens"] for record in trained) == [1, 2, 4]
    card = (output / "README.md").read_text()
    for record in trained:
        score = record["metrics"]["main_score"]
        assert f"| LocalSTSBenchmark (mteb, k={record['num_tokens']} tokens) | main_score | {score:.4f} |" in card
