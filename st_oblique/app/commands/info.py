"""``st-oblique info``: describe a saved oblique model (K, d, towers, similarity, scale, size, training), and with
``--data`` its token-collapse diagnostics (:func:`st_oblique.diagnostics.token_collapse.collapse_diagnostics`: the mean
cosine between the K tokens of an input and their effective rank) on the texts of a table, or on a few built-in
sentences (``--data builtin``: enough to see copies of one token, not how the model behaves on your data)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from st_oblique.app.model_location import check_model_location
from st_oblique.app.options import positive_int
from st_oblique.errors import ObliqueConfigError

BUILTIN_SENTENCES = (
    "A dog runs along the beach.", "Two cats sleep on a red couch.", "A plate of pasta with tomato sauce.",
    "The stock market fell sharply on Monday.", "How do I reset my password?", "A child rides a bicycle in the park.",
    "The theorem follows from the triangle inequality.", "Heavy rain is expected over the weekend.",
    "A man plays the guitar on a street corner.", "Mix the flour and the eggs, then bake for 20 minutes.",
    "The patient was given antibiotics for the infection.", "An old castle stands on a hill above the river.",
)
"""``--data builtin``: a dozen unrelated sentences."""

NAME = "info"
HELP = "describe a saved oblique model (K, d, towers, similarity, scale, size, training)"
DESCRIPTION = HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved model folder or Hub id")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--data", metavar="FILE|builtin",
        help="also print token-collapse diagnostics on the texts of this .tsv/.csv table (with a header row), or on "
        "a few built-in sentences ('builtin')",
    )
    parser.add_argument("--data-column", metavar="COLUMN",
                        help="the table's text column (default: 'caption', 'text', 'sentence' or 'anchor', else the first column)")
    parser.add_argument("--max-samples", type=positive_int, default=256, help="texts read from --data (default: 256)")


def run(args: argparse.Namespace) -> None:
    # torch and sentence-transformers are imported when the command runs, so that `--help` answers at once
    from st_oblique.evaluation.model_loading import load_model
    from st_oblique.model.description import describe_model

    check_model_location(args.model)
    texts, source = _diagnostic_texts(args.data, args.data_column, args.max_samples) if args.data else (None, None)
    path = Path(args.model)
    model = load_model(args.model, device="cpu")
    description = describe_model(model)
    family = _backbone_family(model)
    training = _training_summary(path / "training_report.json") if path.is_dir() else None
    collapse = None
    if texts is not None:
        from st_oblique.diagnostics.token_collapse import collapse_diagnostics

        if description.num_tokens is None or description.num_tokens < 2:
            raise ObliqueConfigError(
                f"--data: {args.model} has {description.num_tokens or 'no'} oblique token(s); token-collapse "
                "diagnostics compare K >= 2 tokens. Drop --data for this model."
            )
        collapse = {"data": source, **collapse_diagnostics(model, texts).to_dict(with_matrix=True)}
    if training:
        training["parameters"] = run_parameter_account(training.get("parameters"), description.parameters)
    if args.json:
        print(json.dumps({"model": args.model, **description.to_dict(), "backbone_family": family, "training": training,
                          **({"token_collapse": collapse} if collapse else {})}, indent=2))
        return
    print(description.to_text())
    if family:
        print(f"\nBuilt like `st-oblique train --backbone {family}` (st_oblique.{_builder_name(family)}).")
    if training:
        print(f"\nTraining ({path / 'training_report.json'}):")
        print(_training_text(training))
    if collapse:
        print(f"\nToken collapse on {collapse['data']}:")
        print(_collapse_text(collapse))


def _backbone_family(model) -> str | None:
    """The backbone family (``--backbone``) whose builder makes models of ``model``'s module classes, or None."""
    from st_oblique.builders.families import family_of
    from st_oblique.modules import MODULE_CLASSES

    classes = {type(module) for module in model.modules()}
    family = family_of(cls.__name__ for cls in classes if MODULE_CLASSES.get(cls.__name__) == cls.__module__)
    return None if family is None else family.name


def _builder_name(family: str) -> str:
    from st_oblique.builders.families import BACKBONE_FAMILIES

    return BACKBONE_FAMILIES[family].builder.split(":")[1]


def _diagnostic_texts(data: str, column: str | None, limit: int) -> tuple[list[str], str]:
    """The texts ``--data`` names (at most ``limit``) and a description of where they come from."""
    from st_oblique.app.text_table import read_table, text_column

    if data == "builtin":
        return list(BUILTIN_SENTENCES)[:limit], f"{min(limit, len(BUILTIN_SENTENCES))} built-in sentences"
    path = Path(data).expanduser()
    if not path.is_file():
        raise ObliqueConfigError(f"--data {data}: no such file; give a .tsv/.csv table with a header row, or 'builtin'.")
    columns, rows = read_table(path)
    chosen = text_column(columns, column)
    if chosen is None:
        raise ObliqueConfigError(f"--data-column {column!r}: {path} has the columns {columns}; name one of them.")
    texts = [value for value in ((row.get(chosen) or "").strip() for row in rows) if value][:limit]
    if len(texts) < 2:
        raise ObliqueConfigError(f"--data {data}: column {chosen!r} has {len(texts)} texts; diagnostics need at least 2.")
    return texts, f"{len(texts)} texts of column {chosen!r} of {path}"


def _collapse_text(collapse: dict[str, Any]) -> str:
    k = collapse["num_tokens"]
    rows = [
        ("mean pairwise cosine", f"{collapse['mean_pairwise_cosine']:.3f}  (between two of the K={k} tokens of an "
                                 "input; 1 = copies of one token)"),
        ("most similar positions", f"{collapse['max_pairwise_cosine']:.3f}"),
        ("effective rank", f"{collapse['effective_rank']:.2f} per input (1 = collapsed, up to {k}), "
                           f"{collapse['dataset_effective_rank']:.2f} over all tokens of the {collapse['num_inputs']} inputs"),
    ]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


def _training_summary(report_path: Path) -> dict[str, Any] | None:
    """The essentials of a ``training_report.json`` (None when the folder has none)."""
    if not report_path.is_file():
        return None
    report = json.loads(report_path.read_text(encoding="utf-8"))
    training = report.get("training", {})
    evaluation = report.get("evaluation", {})
    records = evaluation.get("trained", [])
    # runs evaluated at several token counts (--nested-tokens) have one record per k of each dataset
    several_k = len({record.get("num_tokens") for record in records}) > 1
    scores = {}
    for record in records:
        label = f"{record['dataset']} (k={record.get('num_tokens')})" if several_k else record["dataset"]
        scores[f"{label} {record.get('main_metric')}"] = record["metrics"].get(record.get("main_metric"))
    return {
        "backbone": report.get("config", {}).get("backbone"),
        "data": report.get("data", {}).get("description"),
        "steps": training.get("steps"),
        "parameters": report.get("parameters"),
        "loss": training.get("loss"),
        "final_loss": training.get("final_loss"),
        "learnable_scale": training.get("learnable_scale"),
        "final_scale": training.get("final_scale"),
        "seconds": training.get("seconds"),
        "scores": scores,
        "command": report.get("command"),
    }


def run_parameter_account(parameters: dict[str, int] | None, total: int) -> dict[str, int] | None:
    """The training run's parameter account with every part (``total`` = ``trainable`` + ``frozen`` +
    ``not_trainable``); reports written before ``total`` was recorded get it from the loaded model."""
    if not parameters:
        return None
    total = parameters.get("total", total)
    not_trainable = parameters.get("not_trainable", total - parameters["trainable"] - parameters["frozen"])
    return {"total": total, "trainable": parameters["trainable"], "frozen": parameters["frozen"],
            "not_trainable": not_trainable}


def _parameters_text(parameters: dict[str, int]) -> str:
    return (
        f"{parameters['total']:,} in total = {parameters['trainable']:,} trained + {parameters['frozen']:,} frozen "
        f"by the run + {parameters['not_trainable']:,} never trainable (not used by the oblique model); a locked "
        "tower stays frozen when the model is loaded, parameters frozen by --freeze do not"
    )


def _training_text(training: dict[str, Any]) -> str:
    rows = [
        ("trained on", str(training["data"])),
        ("training", f"{training['steps']} steps of {training['loss']} in {training['seconds']} s, final loss "
                     f"{training['final_loss']:.4g}, {'learned' if training['learnable_scale'] else 'fixed'} scale "
                     f"{training['final_scale']:.4g}"),
        *((("parameters", _parameters_text(parameters)),) if (parameters := training.get("parameters")) else ()),
        *((f"score: {name}", f"{value:.4f}" if isinstance(value, float) else str(value))
          for name, value in training["scores"].items()),
        ("command", str(training["command"])),
    ]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)
