"""Encode throughput of a CLIP with K=16 class tokens relative to the same CLIP with K=1, on CPU.

Compared with the plain CLIP (K=1: CLIP's own class token and towers): K class tokens inside the towers (``first``,
the paper's design), K attention queries over the unchanged towers (``attention``) and K class tokens that join
after the unchanged towers (``class_attention``, CaiT's late class tokens) for each ``--class-attention
LAYERSxWIDTH`` setting (``full`` for the towers' own widths, 512 text / 768 image, where the blocks start from their
last layers).

A ViT-B/16-shaped Hugging Face CLIP (CLIPConfig defaults with 16 px patches: 224 px images -> 197 positions,
12-layer 512-wide text tower with 77 positions), random weights, is saved once with CLIP's real BPE tokenizer
(built offline from the vocabulary that ships with open_clip). ``st_oblique.oblique_clip`` builds K=1 and K=16
models from that same folder (same backbone weights), and both encode the same images and captions. Runs
alternate between the two models so that load from other processes affects both alike; read the ratios, not
the absolute speeds.

What K costs: K−1 extra image positions (197 -> 212 for K=16) and K−1 extra text positions per caption (the
class positions after EOS; captions are truncated K−1 tokens earlier so that nothing exceeds CLIP's 77). The
``text_full_context`` rows pad every caption to the whole context (as open_clip does): 77 positions for both.

    python evaluation/benchmarks/class_token_throughput.py \
        --captions ../shared/data/flickr8k_1k/captions.tsv --output evaluation/results/benchmarks/class_token_throughput.json

    python evaluation/benchmarks/class_token_throughput.py --threads 1 --captions ../shared/data/flickr8k_1k/captions.tsv \
        --workloads image text --class-attention 2x128 1x128 2xfull \
        --output evaluation/results/benchmarks/class_token_throughput_late.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sentence_transformers import SentenceTransformer

import st_oblique

if __package__ in (None, ""):  # run as a script: the repository's evaluation package (its output rules) is importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from evaluation.study_output import add_overwrite_option, checked_output

WORKLOADS = ("image", "text", "text_full_context")
SYNTHETIC_WORDS = "a man woman child dog cat runs plays with ball in the park on street near water red blue two".split()


def save_vit_b16_clip(path: str, seed: int = 0) -> None:
    """A randomly initialised ViT-B/16-shaped CLIP with CLIP's tokenizer and image processor, saved to ``path``."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    bpe = SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(token, token): index for token, index in bpe.encoder.items()}
    merges = [pair for pair, _ in sorted(bpe.bpe_ranks.items(), key=lambda item: item[1])]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    torch.manual_seed(seed)
    config = CLIPConfig(vision_config={"patch_size": 16}, projection_dim=512)
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(path)


def read_captions(path: str | None, count: int) -> list[str]:
    if path is None:
        rng = np.random.default_rng(0)
        return [" ".join(rng.choice(SYNTHETIC_WORDS, size=rng.integers(6, 16))) for _ in range(count)]
    captions: list[str] = []
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            captions.append(row["caption"])
            if len(captions) == count:
                return captions
    raise SystemExit(f"{path} holds only {len(captions)} captions, fewer than --num-captions {count}.")


def random_images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)) for _ in range(count)]


def items_per_second(
    model: SentenceTransformer, inputs: list, batch_size: int, **encode_kwargs
) -> tuple[float, float]:
    """Items per second of wall time and per second of this process's CPU time (the steadier measure on a shared
    machine with ``--threads 1``)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    model.encode(inputs, batch_size=batch_size, show_progress_bar=False, **encode_kwargs)
    return len(inputs) / (time.perf_counter() - start), len(inputs) / (time.process_time() - cpu_start)


def mean_text_positions(model: SentenceTransformer, captions: list[str], **encode_kwargs) -> float:
    """Mean number of positions the text tower runs per caption (caption, class positions and any padding)."""
    return float(np.mean([model.preprocess([caption], **encode_kwargs)["input_ids"].shape[1] for caption in captions]))


def class_attention_setting(text: str) -> tuple[int, int | None]:
    """``"2x128"`` -> ``(2, 128)``; ``"2xfull"`` -> ``(2, None)``: the towers' own widths."""
    layers, _, width = text.lower().partition("x")
    try:
        return int(layers), None if width == "full" else int(width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYERSxWIDTH such as 2x128 or 2xfull, got {text!r}") from None


def attention_clip(folder: str, num_tokens: int, token_dim: int) -> SentenceTransformer:
    """CLIP's unchanged towers with K attention queries per tower (``token_source="attention"``)."""
    from st_oblique import ObliquePooling, ObliqueSentenceTransformer
    from st_oblique.modules import CLIPClassTokenTransformer

    clip = CLIPClassTokenTransformer(folder, num_class_tokens=1)
    pooling = ObliquePooling(
        clip.embedding_dimensions, num_tokens=num_tokens, token_dim=token_dim, token_source="attention"
    )
    return ObliqueSentenceTransformer(modules=[clip, pooling], device="cpu", similarity_fn_name="dot")


def load_average() -> str:
    with open("/proc/loadavg", encoding="utf-8") as handle:
        return handle.read().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", help="captions.tsv of flickr8k (column 'caption'); default: synthetic captions")
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--num-captions", type=int, default=256)
    parser.add_argument("--num-tokens", type=int, default=16)
    parser.add_argument("--token-dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS), help="what to time")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--class-attention",
        nargs="*",
        type=class_attention_setting,
        default=[],
        metavar="LAYERSxWIDTH",
        help="also time K=16 attention queries and these class_attention settings (e.g. 2x128 2xfull)",
    )
    parser.add_argument("--output", help="write the measurements as JSON here")
    add_overwrite_option(parser)
    args = parser.parse_args()
    if args.output:
        checked_output(parser, args.output, args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)

    images = random_images(args.num_images)
    captions = read_captions(args.captions, args.num_captions)
    full_context = {"processing_kwargs": {"text": {"padding": "max_length"}}}
    with tempfile.TemporaryDirectory() as folder:
        save_vit_b16_clip(folder)
        models = {
            "K=1": st_oblique.oblique_clip(folder, num_tokens=1, token_dim=512, device="cpu"),
            f"K={args.num_tokens}": st_oblique.oblique_clip(
                folder, num_tokens=args.num_tokens, token_dim=args.token_dim, device="cpu"
            ),
        }
        if args.class_attention:
            models[f"K={args.num_tokens} attention"] = attention_clip(folder, args.num_tokens, args.token_dim)
        for layers, width in args.class_attention:
            models[f"K={args.num_tokens} class_attention {layers}x{width or 'full'}"] = st_oblique.oblique_clip(
                folder,
                num_tokens=args.num_tokens,
                token_dim=args.token_dim,
                token_source="class_attention",
                class_attention_layers=layers,
                class_attention_width=width or {"text": 512, "image": 768},
                device="cpu",
            )
    workloads = {
        name: inputs
        for name, inputs in {
            "image": (images, {}),
            "text": (captions, {}),
            "text_full_context": (captions, full_context),
        }.items()
        if name in args.workloads
    }
    for model in models.values():  # warm-up
        for inputs, kwargs in workloads.values():
            model.encode(inputs[: args.batch_size], batch_size=args.batch_size, **kwargs)

    speeds = {name: {workload: [] for workload in workloads} for name in models}
    cpu_speeds = {name: {workload: [] for workload in workloads} for name in models}
    uptime_before = load_average()
    for _ in range(args.repeats):
        for workload, (inputs, kwargs) in workloads.items():
            for name, model in models.items():
                wall, cpu = items_per_second(model, inputs, args.batch_size, **kwargs)
                speeds[name][workload].append(wall)
                cpu_speeds[name][workload].append(cpu)

    baseline, oblique = list(models)[:2]
    positions = {
        name: {
            "image": model[0].model.config.vision_config.image_size ** 2 // 16**2 + model[0].num_class_tokens,
            "text_mean": mean_text_positions(model, captions),
            "text_full_context": mean_text_positions(model, captions, **full_context),
            "longest_caption_tokens": model[0]._text_budget(None),
        }
        for name, model in models.items()
    }
    medians = {name: {w: statistics.median(v) for w, v in runs.items()} for name, runs in speeds.items()}
    cpu_medians = {name: {w: statistics.median(v) for w, v in runs.items()} for name, runs in cpu_speeds.items()}
    result = {
        "command": shlex.join(["python", *sys.argv]),
        "machine": f"shared ({os.cpu_count()} cores; other sessions' jobs ran at the same time): compare the ratios",
        "load_average": {"before": uptime_before, "after": load_average()},
        "model": "ViT-B/16-shaped HF CLIP, random weights",
        "images": len(images),
        "captions": len(captions),
        "caption_source": args.captions or "synthetic",
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "positions": positions,
        "items_per_second": medians,
        f"throughput_{oblique}_relative_to_{baseline}": {
            workload: medians[oblique][workload] / medians[baseline][workload] for workload in workloads
        },
        f"relative_to_{baseline}": {
            name: {workload: medians[name][workload] / medians[baseline][workload] for workload in workloads}
            for name in models
            if name != baseline
        },
        "items_per_cpu_second": cpu_medians,
        f"cpu_relative_to_{baseline}": {
            name: {workload: cpu_medians[name][workload] / cpu_medians[baseline][workload] for workload in workloads}
            for name in models
            if name != baseline
        },
        "runs": speeds,
        "runs_cpu": cpu_speeds,
    }
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
