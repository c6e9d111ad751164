"""``st-oblique explain``: what each of the K tokens contributes to one score, and where each image token looks.

Example::

    st-oblique explain runs/lit-oblique --image photo.jpg --text "a dog runs on the beach" --output explain.png
    st-oblique explain runs/oblique-minilm --text "A man plays guitar." --text "Someone plays an instrument."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from st_oblique.app.model_location import check_model_location
from st_oblique.app.options import add_repeatable_option
from st_oblique.errors import ObliqueConfigError

NAME = "explain"
HELP = "per-token contributions of one image-text or text-text score, and each image token's attention (PNG)"
DESCRIPTION = (
    "The oblique similarity is a sum of K per-token cosines: print each token's contribution to the score of an "
    "image and a text (--image PATH --text TEXT) or of two texts (--text A --text B). When the image tokens come "
    "from attention (K class tokens inside a ViT, K class tokens that join after the tower (class_attention), or the "
    "attention pooling of the LiT dual encoder on a CNN), also write one PNG with each token's attention over the "
    "photo (--output)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved model folder or Hub id")
    parser.add_argument("--image", type=Path, help="an image file (compared with the one --text)")
    add_repeatable_option(parser, "--text", dest="texts", metavar="TEXT", help="a text (twice without --image)")
    parser.add_argument("--output", type=Path, default=Path("explain.png"), help="the attention PNG (with --image)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> None:
    # torch and sentence-transformers are imported when the command runs, so that `--help` answers at once
    from st_oblique.data.images import load_image
    from st_oblique.diagnostics.explanations import explain_pair, save_attention_figure, token_attention_maps
    from st_oblique.evaluation.model_loading import load_model

    texts = list(args.texts or [])
    if args.image is not None and len(texts) != 1:
        raise ObliqueConfigError(f"--image is compared with exactly one --text, got {len(texts)}.")
    if args.image is None and len(texts) != 2:
        raise ObliqueConfigError(
            f"Give --image PATH --text TEXT (image-text) or --text A --text B (text-text); got {len(texts)} --text."
        )
    check_model_location(args.model)
    model = load_model(args.model, device="cpu")
    first = load_image(args.image) if args.image is not None else texts[0]
    second = texts[-1]
    explanation = explain_pair(model, first, second)
    figure = None
    note = None
    if args.image is not None:
        maps = token_attention_maps(model, first)
        if maps is None:
            note = (
                "no attention PNG: this model's image tokens have no attention of their own (token_source 'split' or "
                "'last', or class tokens of a tower st-oblique does not run); class tokens inside a ViT, late class "
                "tokens (token_source='class_attention') and attention pooling (token_source='attention') have one "
                "attention map per token"
            )
        else:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            figure = save_attention_figure(
                first, maps, args.output, explanation.contributions, title=f"{args.image.name} vs {second!r}"
            )
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "inputs": [str(args.image) if args.image is not None else texts[0], second],
                    "similarity": explanation.similarity,
                    "contributions": explanation.contributions,
                    "attention_png": None if figure is None else str(figure),
                    "note": note,
                },
                indent=2,
            )
        )
        return
    print(f"{args.image if args.image is not None else repr(texts[0])}  vs  {second!r}")
    print(explanation.to_text())
    if figure is not None:
        print(f"attention of each image token over the photo: {figure}")
    elif note:
        print(note)
