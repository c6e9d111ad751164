"""``st-oblique train``: build, train, evaluate and save an oblique model into one output folder."""

from __future__ import annotations

import argparse

from st_oblique.app.options import add_dataclass_options
from st_oblique.app.train_config import TrainConfig

NAME = "train"
HELP = "train an oblique model (HF CLIP, open_clip, a text encoder, or text + image towers)"
DESCRIPTION = (
    "Build an oblique model, train it with Sentence Transformers' trainer (accelerate launch / torchrun work "
    "unchanged), evaluate it and save model, card, train_config.yaml, training_report.json and training.png "
    "into --output-dir (written completely or not at all). Every option can be set in --config."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_options(parser, TrainConfig)


def run(args: argparse.Namespace) -> None:
    from st_oblique.app.train_pipeline import train  # the training stack, imported only when this command runs

    config = TrainConfig.from_dict({name: getattr(args, name) for name in TrainConfig.field_names()})
    result = train(config, command=args.command_line)
    if result is None:  # not the main process of a distributed run
        return
    training = result.report["training"]
    print(f"\nTrained {config.model_description} for {training['steps']} steps in {training['seconds']:.0f} s "
          f"({training['loss']}; loss {training['first_loss']:.4g} -> {training['final_loss']:.4g}; logit scale "
          f"{training['initial_scale']:.4g} -> {training['final_scale']:.4g}{'' if training['learnable_scale'] else ', fixed'}).")
    if "eval" in result.files:
        print((result.files["eval"] / "results.md").read_text(encoding="utf-8"))
    print(f"Model and card: {result.output_dir} (README.md)")
    for key in ("config", "report", "plot", "eval", "eval_untrained"):
        if key in result.files:
            print(f"  {key + ':':16}{result.files[key]}")
    if result.hub_url:
        print(f"Pushed to the Hub: {result.hub_url}")
