"""``st-oblique convert``: turn a published checkpoint of another code base into an st-oblique model folder.

Example::

    st-oblique convert clip-mtob --checkpoint vit-b16_mt-ob-32-16_e32_f32k_2.pt \\
        --vocab clip-mtob/ERNIE-BASE-EN-2.0 --output clip-mtob-oblique
"""

from __future__ import annotations

import argparse
import time

from st_oblique.errors import ObliqueConfigError

NAME = "convert"
HELP = "convert a published checkpoint (the paper's clip-mtob release) into an st-oblique model folder"
DESCRIPTION = (
    "Convert a checkpoint of the paper's official code (github minogame/clip-mtob: vit-b16_mt-ob-32-16_e32_f32k_2.pt, "
    "the oblique K=16 d=32 model, or vit-b16_e32_f32k.pt, its sphere baseline) into a model folder that loads with "
    "st_oblique.load(OUT) and SentenceTransformer(OUT, trust_remote_code=True) and evaluates with `st-oblique eval`. "
    "Sizes are read from the checkpoint; the folder's card records the paper, the checkpoint's SHA-256 and the licence."
)
FORMATS = ("clip-mtob",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=FORMATS, help="the checkpoint's code base")
    parser.add_argument("--checkpoint", help="the checkpoint file (.pt, a plain state_dict); required")
    parser.add_argument(
        "--vocab", help="the WordPiece vocabulary: the release's ERNIE-BASE-EN-2.0 folder or its vocab.txt; required"
    )
    parser.add_argument("--output", help="the model folder to write (must not exist or be empty); required")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--text-heads", type=int, help="attention heads of the text tower (default: width / 64)")
    parser.add_argument("--vision-heads", type=int, help="attention heads of the image tower (default: width / 64)")


def run(args: argparse.Namespace) -> None:
    # torch, transformers and sentence-transformers are imported when the command runs, so `--help` answers at once
    from st_oblique.converters.clip_mtob import convert_clip_mtob, save_converted
    from st_oblique.output_folder import staged_output_dir

    missing = [f"--{name}" for name in ("checkpoint", "vocab", "output") if not getattr(args, name)]
    if missing:
        raise ObliqueConfigError(
            f"st-oblique convert {args.format} needs {', '.join(missing)} (on the command line or in --config)."
        )
    started = time.perf_counter()
    with staged_output_dir(args.output, overwrite=args.overwrite) as staging:
        model = convert_clip_mtob(
            args.checkpoint, args.vocab, text_heads=args.text_heads, vision_heads=args.vision_heads
        )
        save_converted(model, staging)
    source = model.clip_mtob_source
    sizes = source.sizes
    print(
        f"Converted {source.checkpoint} (sha256 {source.sha256}) into {args.output} in "
        f"{time.perf_counter() - started:.1f} s: {source.variant} model, K={sizes['num_class_tokens']} tokens of "
        f"d={sizes['token_dim']}; image ViT {sizes['vision_layers']}x{sizes['vision_width']} patch {sizes['patch_size']} "
        f"at {sizes['image_size']} px, text encoder {sizes['text_layers']}x{sizes['text_width']}, "
        f"{sizes['context_length']} tokens. Load it with st_oblique.load({str(args.output)!r})."
    )
