"""``st-oblique info``: describe a saved oblique model (K, d, towers, similarity, scale, size, training)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from st_oblique.app.model_location import check_model_location

NAME = "info"
HELP = "describe a saved oblique model (K, d, towers, similarity, scale, size, training)"
DESCRIPTION = HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved model folder or Hub id")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> None:
    # torch and sentence-transformers are imported when the command runs, so that `--help` answers at once
    from st_oblique.description import describe_model
    from st_oblique.evaluation.model_loading import load_model

    check_model_location(args.model)
    path = Path(args.model)
    description = describe_model(load_model(args.model, device="cpu"))
    training = _training_summary(path / "training_report.json") if path.is_dir() else None
    if args.json:
        print(json.dumps({"model": args.model, **description.to_dict(), "training": training}, indent=2))
        return
    print(description.to_text())
    if training:
        print(f"\nTraining ({path / 'training_report.json'}):")
        print(_training_text(training))


def _training_summary(report_path: Path) -> dict[str, Any] | None:
    """The essentials of a ``training_report.json`` (None when the folder has none)."""
    if not report_path.is_file():
        return None
    report = json.loads(report_path.read_text(encoding="utf-8"))
    training = report.get("training", {})
    evaluation = report.get("evaluation", {})
    scores = {
        f"{record['dataset']} {record.get('main_metric')}": record["metrics"].get(record.get("main_metric"))
        for record in evaluation.get("trained", [])
    }
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


def _training_text(training: dict[str, Any]) -> str:
    rows = [
        ("trained on", str(training["data"])),
        ("training", f"{training['steps']} steps of {training['loss']} in {training['seconds']} s, final loss "
                     f"{training['final_loss']:.4g}, {'learned' if training['learnable_scale'] else 'fixed'} scale "
                     f"{training['final_scale']:.4g}"),
        *((("trained parameters", f"{parameters['trainable']:,} ({parameters['frozen']:,} frozen)"),)
          if (parameters := training.get("parameters")) else ()),
        *((f"score: {name}", f"{value:.4f}" if isinstance(value, float) else str(value))
          for name, value in training["scores"].items()),
        ("command", str(training["command"])),
    ]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)
