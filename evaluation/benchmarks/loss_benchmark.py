"""Cost of st-oblique's losses relative to their baselines, measured in one run on CPU.

1. ObliqueContrastiveLoss vs Sentence Transformers' MultipleNegativesRankingLoss (dot_score, symmetric,
   per_direction: the same symmetric InfoNCE), forward + backward on precomputed embeddings (default B=1024,
   K*d = 16*32 = 512). Target: ratio <= 1.1.
2. CachedObliqueContrastiveLoss vs ObliqueContrastiveLoss, one training step (forward + backward, no optimizer)
   of a tiny random oblique BERT at batch 1024. Targets: peak memory <= 1/4, time <= 2.5x.

Timed runs alternate between the compared losses (after warm-up) and report medians, so that load from other
processes on the machine affects both alike: read the ratios, not the absolute times. PyTorch runs on one thread
by default (``--threads``): on a machine shared with other jobs, OpenMP threads that wait for each other at every
op penalize many small ops (the cached loss's mini-batches) far more than a few large ones, which measures the
machine's load rather than the loss.

Peak memory of a step is measured two ways, each loss in its own fresh subprocess (so nothing of one run is left
in the other's allocator):

- tensor memory: the peak of torch.profiler's memory timeline over the step (every tensor PyTorch allocates,
  activations, gradients and temporaries; the model and the tokenized inputs that exist before the step are
  excluded);
- process memory: the rise of the peak resident set size over the RSS just before the step (``VmHWM`` and ``VmRSS``
  of /proc/self/status, the peak reset through /proc/self/clear_refs before the step), which also counts allocator
  overhead. (``ru_maxrss`` would not do: Linux keeps it across exec, so a subprocess inherits its parent's peak.)
  The subprocess runs this plain step before the profiled one.

    python evaluation/benchmarks/loss_benchmark.py            # 2-3 minutes on 2 shared cores
    python evaluation/benchmarks/loss_benchmark.py --batch-size 2048 --mini-batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import torch

WORDS = (
    "a an the of on in at with to and is are man woman child dog cat car bike horse guitar food ball street park "
    "beach water photo picture red blue green big small old young two three people plays runs eats sits rides "
    "holds walks jumps looks near under over city field room table window door tree river mountain snow"
).split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--num-tokens", type=int, default=16, help="K")
    parser.add_argument("--token-dim", type=int, default=32, help="d")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per loss in part 1")
    parser.add_argument("--step-repeats", type=int, default=3, help="timed training steps per loss in part 2")
    parser.add_argument("--mini-batch-size", type=int, default=32, help="of the cached loss")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (see above)")
    parser.add_argument("--skip-model", action="store_true", help="run part 1 only")
    parser.add_argument("--measure-memory", choices=["cached", "uncached"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.measure_memory:
        print(json.dumps(measure_step_memory(args)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    loss_vs_mnrl(args)
    if not args.skip_model:
        with tempfile.TemporaryDirectory() as model_dir:
            args.model_dir = write_tiny_bert(model_dir)
            cached_vs_uncached(args)


def loss_vs_mnrl(args: argparse.Namespace) -> None:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.util import dot_score
    from torch import nn

    from st_oblique import ObliqueContrastiveLoss, manifold
    from st_oblique.modules.pooling import ObliquePooling

    k, d, batch = args.num_tokens, args.token_dim, args.batch_size
    holder = nn.Sequential(ObliquePooling(8, num_tokens=k, token_dim=d))
    anchors, positives = (manifold.project(torch.randn(batch, k * d), num_tokens=k) for _ in range(2))
    mnrl = MultipleNegativesRankingLoss(
        holder, scale=1.0, similarity_fct=dot_score, directions=("query_to_doc", "doc_to_query"),
        partition_mode="per_direction",
    )
    fixed = ObliqueContrastiveLoss(holder, scale=1.0)
    learnable = ObliqueContrastiveLoss(holder, scale=1.0, learnable_scale=True)

    def step(loss: Callable) -> Callable[[], None]:
        def run() -> None:
            leaves = [anchors.clone().requires_grad_(), positives.clone().requires_grad_()]
            loss(leaves).backward()

        return run

    runs = {
        "MultipleNegativesRankingLoss (dot_score, symmetric)": step(lambda e: mnrl.compute_loss_from_embeddings(e, None)),
        "ObliqueContrastiveLoss (fixed scale)": step(fixed.compute_loss_from_embeddings),
        "ObliqueContrastiveLoss (learnable scale)": step(learnable.compute_loss_from_embeddings),
    }
    times = interleaved_medians(runs, repeats=args.repeats, warmup=3)
    baseline = times["MultipleNegativesRankingLoss (dot_score, symmetric)"]
    print(f"\n1) forward+backward on precomputed embeddings, B={batch}, K*d={k}*{d}={k * d}, median of {args.repeats}:")
    for name, seconds in times.items():
        print(f"   {name:<52} {1000 * seconds:8.2f} ms   ratio {seconds / baseline:.3f}")


def cached_vs_uncached(args: argparse.Namespace) -> None:
    model, features = tiny_model_and_batch(args)
    losses = {"uncached": make_loss(model, "uncached", args), "cached": make_loss(model, "cached", args)}

    def step(loss) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            loss(features, None).backward()

        return run

    times = interleaved_medians({name: step(loss) for name, loss in losses.items()}, repeats=args.step_repeats, warmup=1)
    print(
        f"\n2) one training step (forward+backward) of a tiny oblique BERT ({describe(model)}), batch {args.batch_size}, "
        f"cached mini_batch_size={args.mini_batch_size}:"
    )
    print(f"   time, median of {args.step_repeats}: uncached {times['uncached']:.2f} s, cached {times['cached']:.2f} s, "
          f"ratio {times['cached'] / times['uncached']:.2f}")
    memory = {name: run_memory_subprocess(name, args) for name in ("uncached", "cached")}
    for key, label in (("tensor_peak_mb", "tensor memory (torch.profiler timeline)"),
                       ("rss_peak_rise_mb", "process memory (peak RSS rise over RSS before the step)")):
        print(f"   peak {label}: uncached {memory['uncached'][key]:.1f} MB, cached {memory['cached'][key]:.1f} MB, "
              f"ratio {memory['cached'][key] / memory['uncached'][key]:.3f}")


def interleaved_medians(runs: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    for run in runs.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def write_tiny_bert(path: str) -> str:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_model_and_batch(args: argparse.Namespace):
    import random

    import st_oblique

    torch.manual_seed(0)
    model = st_oblique.oblique_text_model(args.model_dir, num_tokens=args.num_tokens, token_dim=args.token_dim)
    generator = random.Random(0)

    def sentences() -> list[str]:
        return [" ".join(generator.choices(WORDS, k=generator.randint(8, 16))) for _ in range(args.batch_size)]

    features = [model.preprocess(sentences()), model.preprocess(sentences())]
    return model, features


def make_loss(model, name: str, args: argparse.Namespace):
    from st_oblique import CachedObliqueContrastiveLoss, ObliqueContrastiveLoss

    if name == "cached":
        return CachedObliqueContrastiveLoss(model, learnable_scale=True, mini_batch_size=args.mini_batch_size)
    return ObliqueContrastiveLoss(model, learnable_scale=True)


def describe(model) -> str:
    parameters = sum(p.numel() for p in model.parameters())
    config = model[0].model.config
    return (
        f"{config.num_hidden_layers} layers, width {config.hidden_size}, {parameters / 1e6:.2f}M parameters, "
        f"{model[0].num_class_tokens} class tokens"
    )


def run_memory_subprocess(name: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--measure-memory", name, "--model-dir", args.model_dir,
        "--batch-size", str(args.batch_size), "--num-tokens", str(args.num_tokens), "--token-dim", str(args.token_dim),
        "--mini-batch-size", str(args.mini_batch_size), "--threads", str(args.threads),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"memory measurement of the {name} loss failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_step_memory(args: argparse.Namespace) -> dict:
    """One plain step for the RSS peak, then one profiled step for the tensor peak (run in a fresh process)."""
    from torch.profiler import ProfilerActivity, profile

    model, features = tiny_model_and_batch(args)
    loss = make_loss(model, args.measure_memory, args)
    reset_peak_rss()
    rss_before = proc_status_mb("VmRSS")
    loss(features, None).backward()
    rss_peak_rise = proc_status_mb("VmHWM") - rss_before
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        loss(features, None).backward()
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as folder:
        warnings.simplefilter("ignore", FutureWarning)  # export_memory_timeline is deprecated for CUDA users
        prof.export_memory_timeline(os.path.join(folder, "timeline.json"), device="cpu")
        with open(os.path.join(folder, "timeline.json")) as handle:
            _, sizes = json.load(handle)
    totals = [sum(size) for size in sizes]
    return {"tensor_peak_mb": (max(totals) - totals[0]) / 2**20, "rss_peak_rise_mb": rss_peak_rise}


def proc_status_mb(field: str) -> float:
    """``VmRSS`` (current) or ``VmHWM`` (peak) resident set size of this process, in MiB (Linux)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise SystemExit(f"/proc/self/status has no {field}: the memory measurement needs Linux.")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak that follows belongs to the step."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


if __name__ == "__main__":
    main()
