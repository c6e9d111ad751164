"""The paper's batch on one machine: CachedObliqueContrastiveLoss at batch sizes up to 32,768 on CPU.

Sun (arXiv 2209.02127) trains at batch 32,768. With GradCache (``CachedObliqueContrastiveLoss``) the activations of
only one mini-batch exist at a time, and the (B, B) score matrix is never built (the loss runs over chunks of
``mini_batch_size`` rows), so a training step's memory should not grow with B beyond what GradCache must keep: the B
embeddings of each column and their gradients, ``2 columns x 2 x B x K*d x 4`` bytes (256 MiB at B=32,768,
K*d=512). Per batch size, in a fresh subprocess each (nothing of one run left in the other's allocator), one
training step (forward + backward, no optimizer) of a tiny random oblique BERT (K=16, d=32) on B random caption
pairs of 8-16 words:

- ``peak_memory_mb``: the process's peak resident set size during the step (``VmHWM`` of /proc/self/status,
  reset just before the step), everything included: Python, torch, the model, the tokenized batch;
- ``step_rise_mb``: that peak minus the resident size just before the step (what the step itself adds);
- ``seconds_per_sample``: the step's wall time divided by B (one step: at these sizes a step is long enough);
- at the smallest batch, the exactness check: the cached and the uncached ``ObliqueContrastiveLoss`` (which builds
  the (B, B) matrix) on the same batch in float64, and the relative differences of the loss, of all gradients
  as one vector (``max_relative_difference``), and the scale's gradient (absolutely: for a random model it is ~0).

Time per sample is not constant here, and should not be: the loss itself costs O(B^2 K d) (every row against
every column), so at this tiny model's size (a few MFLOPs per caption) the score matrix dominates from B of a few
thousand on; the encoder's cost per sample (what dominates for a real tower: a ViT-B/16 image is ~17.5 GFLOPs
forward) is flat. ``loss_seconds_per_sample`` (the loss on precomputed embeddings, timed separately) shows that
part.

    python evaluation/benchmarks/cached_batch_scaling.py                     # 1k, 4k, 16k, 32,768: ~5 min
    python evaluation/benchmarks/cached_batch_scaling.py --batch-sizes 256 1024 --output /tmp/scaling.json

Writes ``evaluation/results/benchmarks/cached_batch_scaling.json`` (``{"rows": [{"batch_size", "peak_memory_mb",
"seconds_per_sample", ...}], ...}``) and a PNG beside it. Read the ratios: absolute times depend on the machine's
load, which the JSON records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from loss_benchmark import proc_status_mb, reset_peak_rss, tiny_model_and_batch, write_tiny_bert

from st_oblique import CachedObliqueContrastiveLoss, ObliqueContrastiveLoss, manifold

if __package__ in (None, ""):  # run as a script: the repository's evaluation package (its output rules) is importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from evaluation.study_output import add_output_option, checked_output

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "cached_batch_scaling.json"
"""The committed measurement (written only with ``--output`` here and ``--overwrite``)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 4096, 16384, 32768])
    parser.add_argument("--mini-batch-size", type=int, default=256, help="of the cached loss")
    parser.add_argument("--num-tokens", type=int, default=16, help="K")
    parser.add_argument("--token-dim", type=int, default=32, help="d")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    add_output_option(parser, "benchmarks/cached_batch_scaling.json", option="--output",
                      what="the JSON file (a PNG is written beside it)")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # one batch size, in the subprocess
    parser.add_argument("--check-exactness", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure is not None:
        print(json.dumps(measure_step(args)))
        return

    checked_output(parser, args.output, args.overwrite)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as model_dir:
        write_tiny_bert(model_dir)
        for index, batch_size in enumerate(sorted(args.batch_sizes)):
            row = run_subprocess(args, model_dir, batch_size, check_exactness=index == 0)
            rows.append(row)
            print(
                f"B={batch_size:>6}: peak {row['peak_memory_mb']:7.1f} MB (step adds {row['step_rise_mb']:6.1f} MB), "
                f"{1e3 * row['seconds_per_sample']:.3f} ms/sample (loss part {1e3 * row['loss_seconds_per_sample']:.3f})"
                + (f", max relative difference to the uncached loss {row['max_relative_difference']:.1e}"
                   if "max_relative_difference" in row else ""),
                flush=True,
            )
    peaks = [row["peak_memory_mb"] for row in rows]
    per_sample = [row["seconds_per_sample"] for row in rows]
    result = {
        "command": "python evaluation/benchmarks/cached_batch_scaling.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": args.threads, "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "model": f"tiny random oblique BERT (2 layers, width 64), K={args.num_tokens}, d={args.token_dim}",
        "mini_batch_size": args.mini_batch_size,
        "rows": rows,
        "peak_memory_ratio_largest_to_smallest": peaks[-1] / peaks[0],
        "seconds_per_sample_ratio_largest_to_smallest": per_sample[-1] / per_sample[0],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot(result, args.output.with_suffix(".png"))
    print(f"peak memory largest/smallest batch: {result['peak_memory_ratio_largest_to_smallest']:.2f}; "
          f"time per sample: {result['seconds_per_sample_ratio_largest_to_smallest']:.2f}")
    print(f"Written {args.output} and {args.output.with_suffix('.png')}")


def run_subprocess(args: argparse.Namespace, model_dir: str, batch_size: int, *, check_exactness: bool) -> dict:
    command = [
        sys.executable, __file__, "--measure", str(batch_size), "--model-dir", model_dir,
        "--mini-batch-size", str(args.mini_batch_size), "--num-tokens", str(args.num_tokens),
        "--token-dim", str(args.token_dim), "--threads", str(args.threads),
    ]
    if check_exactness:
        command.append("--check-exactness")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the step at batch {batch_size} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_step(args: argparse.Namespace) -> dict:
    batch_size = args.measure
    args.batch_size = batch_size  # what tiny_model_and_batch reads
    model, features = tiny_model_and_batch(args)
    model.eval()  # no dropout: the exactness check compares the same network
    cached = CachedObliqueContrastiveLoss(model, learnable_scale=True, mini_batch_size=args.mini_batch_size)
    reset_peak_rss()
    rss_before = proc_status_mb("VmRSS")
    start = time.perf_counter()
    loss = cached(features, None)
    loss.backward()
    seconds = time.perf_counter() - start
    row = {
        "batch_size": batch_size,
        "peak_memory_mb": proc_status_mb("VmHWM"),
        "step_rise_mb": proc_status_mb("VmHWM") - rss_before,
        "seconds_per_sample": seconds / batch_size,
        "step_seconds": seconds,
        "loss": loss.item(),
    }
    row["loss_seconds_per_sample"] = loss_seconds(cached, batch_size, args.num_tokens * args.token_dim) / batch_size
    if args.check_exactness:
        row.update(exactness(model, features, args.mini_batch_size))
    return row


def loss_seconds(cached, batch_size: int, width: int) -> float:
    """Seconds of the cached loss's own part of a step (scores, softmax, their backward, chunk by chunk) on random
    unit-token embeddings of the same shape: what the step costs beyond the encoder."""
    columns = [manifold.project(torch.randn(batch_size, width), num_tokens=cached.num_tokens).requires_grad_() for _ in range(2)]
    start = time.perf_counter()
    cached.calculate_loss([[columns[0]], [columns[1]]], with_backward=True)
    return time.perf_counter() - start


def exactness(model, features, mini_batch_size: int) -> dict:
    """Loss and gradients of the cached and the uncached loss on the same batch, in float64 (a random model's
    scores are nearly all equal, so its float32 gradients are mostly rounding noise): relative differences of the
    loss and of all parameters' gradients as one vector; the scale's two gradients and their absolute difference."""
    model.double()
    results = {}
    for name, loss in (
        ("cached", CachedObliqueContrastiveLoss(model, learnable_scale=True, mini_batch_size=mini_batch_size)),
        ("uncached", ObliqueContrastiveLoss(model, learnable_scale=True)),
    ):
        model.zero_grad(set_to_none=True)
        value = loss(features, None)
        value.backward()
        gradients = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[name] = (value.detach(), gradients, loss.logit_scale.log_scale_bias.grad.detach())
    (loss_c, grad_c, scale_c), (loss_u, grad_u, scale_u) = results["cached"], results["uncached"]
    relative = {
        "loss": (abs(loss_c - loss_u) / abs(loss_u)).item(),
        "parameter_gradients": ((grad_c - grad_u).norm() / grad_u.norm()).item(),
    }
    return {
        "exactness_float64": relative,
        "max_relative_difference": max(relative.values()),
        # a random model's scores are all alike, so d loss / d log-scale is ~0 and only its absolute error means much
        "scale_gradient": {"cached": scale_c.item(), "uncached": scale_u.item(), "abs_difference": abs(scale_c - scale_u).item()},
        "uncached_loss": loss_u.item(),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["batch_size"] for row in result["rows"]]
    figure, (memory_axis, time_axis) = plt.subplots(1, 2, figsize=(9, 3.4))
    memory_axis.plot(sizes, [row["peak_memory_mb"] for row in result["rows"]], "o-", label="process peak")
    memory_axis.plot(sizes, [row["step_rise_mb"] for row in result["rows"]], "s--", label="added by the step")
    memory_axis.set(xscale="log", xlabel="batch size", ylabel="MiB", title="peak memory of one step")
    memory_axis.legend()
    time_axis.plot(sizes, [1e3 * row["seconds_per_sample"] for row in result["rows"]], "o-", label="whole step")
    time_axis.plot(sizes, [1e3 * row["loss_seconds_per_sample"] for row in result["rows"]], "s--",
                   label="loss part (O(B) per sample)")
    time_axis.plot(sizes, [1e3 * (row["seconds_per_sample"] - row["loss_seconds_per_sample"]) for row in result["rows"]],
                   "^:", label="the rest (encoder)")
    time_axis.legend(fontsize=7)
    time_axis.set(xscale="log", xlabel="batch size", ylabel="ms per sample", title="time per sample", ylim=(0, None))
    for axis in (memory_axis, time_axis):
        axis.set_xticks(sizes, [f"{size:,}" for size in sizes])
        axis.minorticks_off()
    figure.suptitle(f"CachedObliqueContrastiveLoss, mini-batch {result['mini_batch_size']}, {result['model']}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    main()
