"""Token-collapse diagnostics from the command line: ``st-oblique info MODEL --data FILE|builtin``, and in the
report and card of ``st-oblique train``. The numbers are checked against ``token_collapse`` of embeddings computed
here (and its own tests check it against constructed collapsed and orthogonal tokens)."""

from __future__ import annotations

import csv
import json

import pytest

import st_oblique
from st_oblique.app.commands.info import BUILTIN_SENTENCES
from st_oblique.diagnostics.token_collapse import token_collapse

K = 4


def expected(model_path, texts):
    model = st_oblique.load(str(model_path), device="cpu")
    return token_collapse(model.encode(list(texts), convert_to_tensor=True), K).to_dict()


def pairs_column(path, column):
    with open(path, encoding="utf-8", newline="") as handle:
        return [row[column] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


def assert_same(found, reference):
    for key in ("num_inputs", "num_tokens"):
        assert found[key] == reference[key]
    for key in ("mean_pairwise_cosine", "max_pairwise_cosine", "effective_rank", "dataset_effective_rank"):
        assert found[key] == pytest.approx(reference[key], abs=1e-5), key


def test_info_builtin_sentences(cli, text_run):
    result = cli("info", text_run, "--data", "builtin")
    assert result.code == 0, result.err
    assert "Token collapse on 12 built-in sentences:" in result.out
    assert "mean pairwise cosine" in result.out and "effective rank" in result.out
    found = json.loads(cli("info", text_run, "--data", "builtin", "--json").out)["token_collapse"]
    assert_same(found, expected(text_run, BUILTIN_SENTENCES))
    assert len(found["pairwise_cosine"]) == K


def test_info_table_column(cli, assets, text_run):
    found = json.loads(cli("info", text_run, "--data", assets.pairs, "--data-column", "positive", "--json").out)
    collapse = found["token_collapse"]
    assert collapse["data"] == f"8 texts of column 'positive' of {assets.pairs}"
    assert_same(collapse, expected(text_run, pairs_column(assets.pairs, "positive")))


def test_info_default_column_and_limit(cli, assets, text_run):
    collapse = json.loads(cli("info", text_run, "--data", assets.pairs, "--max-samples", 3, "--json").out)["token_collapse"]
    assert collapse["num_inputs"] == 3 and "'anchor'" in collapse["data"]  # 'anchor' is a known text column
    assert_same(collapse, expected(text_run, pairs_column(assets.pairs, "anchor")[:3]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "no/such.tsv"], "--data no/such.tsv: no such file; give a .tsv/.csv table with a header row, or 'builtin'."),
        (["--data", "{pairs}", "--data-column", "x"], "--data-column 'x': {pairs} has the columns ['anchor', 'positive']"),
        (["--data", "builtin", "--max-samples", "0"], "argument --max-samples: must be a positive whole number, got 0"),
    ],
)
def test_info_data_errors(args, message, cli, assets, text_run):
    result = cli("info", text_run, *[arg.format(pairs=assets.pairs) for arg in args])
    assert result.code == 2
    assert len(result.error_lines) == 1 and message.format(pairs=assets.pairs) in result.error_lines[0], result.err


def test_training_report_and_card_have_collapse_diagnostics(text_run, assets):
    report = json.loads((text_run / "training_report.json").read_text())["token_collapse"]
    assert report["rows"] == 8 and sorted(report["columns"]) == ["anchor", "positive"]
    for column in ("anchor", "positive"):
        assert_same(report["columns"][column], expected(text_run, pairs_column(assets.pairs, column)))
    card = (text_run / "README.md").read_text()
    anchor = report["columns"]["anchor"]
    assert "- **Token collapse**" in card
    assert (f"`anchor` (8 inputs of the training data): mean cosine between two tokens "
            f"{anchor['mean_pairwise_cosine']:.3f}, effective rank {anchor['effective_rank']:.2f} of 4 per input") in card


def test_info_keeps_one_score_per_token_count(tmp_path):
    """A run evaluated at several k (train --nested-tokens) has one record per k of a dataset: info shows each."""
    import json

    from st_oblique.app.commands.info import _training_summary

    records = [
        {"dataset": "imagenette", "main_metric": "acc1", "num_tokens": k, "metrics": {"acc1": 0.1 * k}} for k in (1, 4)
    ]
    report = tmp_path / "training_report.json"
    report.write_text(json.dumps({"evaluation": {"trained": records}}), encoding="utf-8")
    assert _training_summary(report)["scores"] == {"imagenette (k=1) acc1": 0.1, "imagenette (k=4) acc1": 0.4}
    report.write_text(json.dumps({"evaluation": {"trained": records[1:]}}), encoding="utf-8")
    assert _training_summary(report)["scores"] == {"imagenette acc1": 0.4}
