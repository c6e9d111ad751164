"""Training throughput against open_clip's own trainer: ``st-oblique train`` vs ``python -m open_clip_train.main``.

Both trainers train the same small open_clip architecture (a ViT with 224 px images in 16 px patches, so 197
positions as in ViT-B/16, and a causal text transformer; random init) on the same Flickr8k-1k (image, caption) pairs
(from ``../shared/data/flickr8k_1k``), each in the format it reads:

- open_clip_train: a CSV of image paths and captions (``--dataset-type csv``; the images extracted once into a
  temporary folder);
- st-oblique: the caption table and the image tar (``--captions``/``--images``).

(WebDataset shards for both are not measured: open_clip_train 3.3's webdataset pipeline fails with the webdataset
1.0.2 installed here, ``KeyError: 'fname'`` before its first batch.)

Same batch size, number of steps, torch threads (``OMP_NUM_THREADS``), data-loader workers, precision (float32),
optimizer (AdamW, same learning rate, warmup and weight decay), gradient clipping at 1.0 (the Hugging Face
trainer's default, given to open_clip_train too), a learnable logit scale starting at 1/0.07 and capped at 100,
logging every step. st-oblique runs at K=1 (a plain CLIP: one unit token of size ``embed_dim``) and at K=16 (16
tokens of ``embed_dim / 16``; 15 extra class positions in the image tower: 197 -> 212, and after the caption's EOT).

Each run is a subprocess (``python -m open_clip_train.main ...``, ``st-oblique train ...``), so both pay process
start-up; runs alternate (open_clip_train, st-oblique K=1, st-oblique K=16, then the reverse order). Measured per run:

- ``steady_samples_per_second``: from the arrival times of the per-step log lines (open_clip_train's "Train Epoch"
  lines, the Hugging Face trainer's ``{'loss': ...}`` lines; both printed right after the optimizer step), the
  rows trained between the first line after ``--warmup-steps`` and the last one, divided by the time between them
  (start-up, data loading before training, the first steps and saving the model are excluded);
- ``wall_seconds`` and ``wall_samples_per_second``: the whole command, start-up and saving included;
- ``peak_rss_mb``: the peak resident set size of the trainer process (``wait4``'s ``ru_maxrss``: the largest of the
  process and its data-loader workers, not their sum).

    python evaluation/benchmarks/vs_open_clip_train.py --output evaluation/results/benchmarks/vs_open_clip_train.json
    python evaluation/benchmarks/vs_open_clip_train.py --quick --output /tmp/vs_open_clip_train.json   # <= 5 min

Read the ratios (st-oblique / open_clip_train, medians over repeats): absolute speeds depend on the machine's load,
which the JSON records.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository's evaluation package (its output rules) is importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from evaluation.study_output import add_output_option, checked_output

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "vs_open_clip_train.json"
"""The committed measurement (written only with ``--output`` here and ``--overwrite``)."""
SHARED_FLICKR = Path(__file__).resolve().parents[3] / "shared" / "data" / "flickr8k_1k"

ARCHITECTURE = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 224, "patch_size": 16, "width": 96, "layers": 2, "head_width": 32, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""A small random open_clip CLIP: ViT-B/16's 197 image positions at a fraction of its width and depth."""
TINY_ARCHITECTURE = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
"""``--tiny``: for the CI smoke test (it checks that the numbers are produced, not their values)."""

INITIAL_SCALE = 1 / 0.07  # open_clip's initial logit scale
OPEN_CLIP_STEP = re.compile(r"Train Epoch: \d+ \[\s*(\d+)/")
HF_STEP = re.compile(r"\{'loss': ")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_FLICKR, help="the Flickr8k-1k folder (captions.tsv + tar)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--warmup-steps", type=int, default=5, help="first steps left out of the steady-state rate")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each trainer (alternating)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each trainer (OMP_NUM_THREADS)")
    parser.add_argument("--workers", type=int, default=1, help="data-loader workers of each trainer")
    parser.add_argument("--num-tokens", type=int, default=16, help="K of the oblique run")
    parser.add_argument("--quick", action="store_true", help="12 steps, 1 repeat (about 3 minutes on 2 cores)")
    add_output_option(parser, "benchmarks/vs_open_clip_train.json", option="--output", what="the JSON file")
    parser.add_argument("--tiny", action="store_true", help="a tiny architecture (smoke tests)")
    args = parser.parse_args(argv)
    checked_output(parser, args.output, args.overwrite)
    if args.quick:
        args.steps, args.repeats, args.warmup_steps = min(args.steps, 12), 1, min(args.warmup_steps, 3)
    if args.steps <= args.warmup_steps + 1:
        parser.error("--steps must exceed --warmup-steps + 1")
    args.architecture = TINY_ARCHITECTURE if args.tiny else ARCHITECTURE
    if not (args.data / "captions.tsv").is_file():
        raise SystemExit(f"No Flickr8k-1k at {args.data} (captions.tsv + image tar); pass --data.")

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vs_open_clip_train-") as folder:
        work = Path(folder)
        inputs = prepare(args, work)
        runs: dict[str, list[dict]] = {"open_clip_train": [], "st_oblique_k1": [], "st_oblique_k16": []}
        for repeat in range(args.repeats):
            order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
            for name in order:
                command = (open_clip_command(args, inputs, work / f"{name}-{repeat}") if name == "open_clip_train"
                           else st_oblique_command(args, inputs, work / f"{name}-{repeat}",
                                                   num_tokens=1 if name.endswith("k1") else args.num_tokens))
                pattern = OPEN_CLIP_STEP if name == "open_clip_train" else HF_STEP
                run = measure(command, pattern, args, cwd=work)
                runs[name].append(run)
                print(f"{name:>16} run {repeat}: {run['steady_samples_per_second']:7.2f} samples/s steady, "
                      f"{run['wall_seconds']:6.1f} s wall, peak RSS {run['peak_rss_mb']:7.1f} MB", flush=True)
    result = summarize(args, runs, load_before, argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"st-oblique / open_clip_train samples/s: K=1 {result['ratio_samples_per_second']:.3f}, "
          f"K={args.num_tokens} {result['ratio_samples_per_second_k16']:.3f}; K={args.num_tokens} vs K=1 time per "
          f"sample {result['k16_time_per_sample_vs_k1']:.3f} (image positions {result['image_positions_ratio']:.3f})")
    print(f"Written {args.output}")
    return result


def prepare(args: argparse.Namespace, work: Path) -> dict[str, str]:
    """The first ``steps x batch`` captions of Flickr8k-1k in both trainers' formats, and the architecture files."""
    rows_needed = args.steps * args.batch_size
    with open(args.data / "captions.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if rows_needed > len(rows):
        raise SystemExit(f"--steps x --batch-size = {rows_needed} rows, Flickr8k-1k has {len(rows)}.")
    rows = rows[:rows_needed]
    archive_path = next(args.data.glob("*.tar"))
    images = work / "images"
    with tarfile.open(archive_path) as archive:
        members = {Path(member.name).name: member for member in archive.getmembers() if member.isfile()}
        payloads = {name: archive.extractfile(members[name]).read() for name in {row["image"] for row in rows}}
    inputs = {"tar": str(archive_path)}
    images.mkdir()
    for name, payload in payloads.items():
        (images / name).write_bytes(payload)
    with open(work / "train.csv", "w", encoding="utf-8", newline="") as handle:  # open_clip_train's CSV layout
        handle.write("filepath\ttitle\n")
        handle.writelines(f"{images / row['image']}\t{row['caption']}\n" for row in rows)
    with open(work / "captions.tsv", "w", encoding="utf-8", newline="") as handle:
        handle.write("image\tcaption_idx\tcaption\n")
        handle.writelines(f"{row['image']}\t{row['caption_idx']}\t{row['caption']}\n" for row in rows)
    inputs.update(csv=str(work / "train.csv"), captions=str(work / "captions.tsv"))
    model = work / "model"
    model.mkdir()
    (model / "open_clip_config.json").write_text(json.dumps({"model_cfg": args.architecture, "preprocess_cfg": {}}))
    (work / "tiny_vit.json").write_text(json.dumps(args.architecture))
    inputs.update(model=str(model), config=str(work / "tiny_vit.json"), rows=str(rows_needed))
    return inputs


def open_clip_command(args: argparse.Namespace, inputs: dict[str, str], logs: Path) -> list[str]:
    data = ["--train-data", inputs["csv"], "--dataset-type", "csv"]
    return [
        sys.executable, "-m", "open_clip_train.main", "--model", f"local-dir:{inputs['model']}", *data,
        "--batch-size", str(args.batch_size), "--epochs", "1", "--workers", str(args.workers), "--device", "cpu",
        "--precision", "fp32", "--lr", "5e-4", "--warmup", "2", "--wd", "0.1", "--grad-clip-norm", "1.0",
        "--log-every-n-steps", "1", "--logs", str(logs), "--name", "run", "--save-frequency", "0",
        "--zeroshot-frequency", "0", "--val-frequency", "0", "--seed", "0",
    ]


def st_oblique_command(args: argparse.Namespace, inputs: dict[str, str], output: Path, *, num_tokens: int) -> list[str]:
    data = ["--captions", inputs["captions"], "--images", inputs["tar"]]
    return [
        str(Path(sys.executable).with_name("st-oblique")), "train", "--backbone", "open_clip",
        "--open-clip-config", inputs["config"], "--num-tokens", str(num_tokens),
        "--token-dim", str(args.architecture["embed_dim"] // num_tokens), *data,
        "--batch-size", str(args.batch_size), "--max-steps", str(args.steps), "--learning-rate", "5e-4",
        "--warmup", "2", "--weight-decay", "0.1", "--scale", str(INITIAL_SCALE), "--scale-mode", "learnable",
        "--max-scale", "100", "--dataloader-num-workers", str(args.workers), "--logging-steps", "1", "--device", "cpu",
        "--seed", "0", "--no-progress", "--output-dir", str(output),
    ]


def measure(command: list[str], step_pattern: re.Pattern, args: argparse.Namespace, *, cwd: Path) -> dict:
    """Run ``command``, timestamping its per-step log lines as they arrive; its peak RSS from ``wait4``."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                   "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment, cwd=cwd)
    step_times, tail = [], []
    for line in process.stdout:
        if step_pattern.search(line):
            step_times.append(time.perf_counter())
        tail = [*tail[-40:], line]
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0 or len(step_times) < args.steps:
        raise SystemExit(f"{' '.join(command)}\nexited {process.returncode} after {len(step_times)} step lines:\n"
                         + "".join(tail))
    first, last = args.warmup_steps, len(step_times) - 1  # index i: the line after step i + 1
    steady = (last - first) * args.batch_size / (step_times[last] - step_times[first])
    return {
        "steady_samples_per_second": steady,
        "wall_seconds": wall,
        "wall_samples_per_second": args.steps * args.batch_size / wall,
        "seconds_to_first_step": step_times[0] - started,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "steps_logged": len(step_times),
    }


def summarize(args: argparse.Namespace, runs: dict[str, list[dict]], load_before, argv) -> dict:
    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    reference = median("open_clip_train", "steady_samples_per_second")
    k1, k16 = median("st_oblique_k1", "steady_samples_per_second"), median("st_oblique_k16", "steady_samples_per_second")
    vision = args.architecture["vision_cfg"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    import open_clip
    import torch

    return {
        "command": "python evaluation/benchmarks/vs_open_clip_train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "open_clip": open_clip.__version__,
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "settings": {"format": "open_clip_train CSV vs st-oblique caption table", "batch_size": args.batch_size, "steps": args.steps,
                     "warmup_steps_excluded": args.warmup_steps, "repeats": args.repeats, "threads": args.threads,
                     "workers": args.workers, "precision": "fp32", "architecture": args.architecture,
                     "num_tokens": args.num_tokens, "data": str(args.data)},
        "ratio_samples_per_second": k1 / reference,
        "ratio_samples_per_second_k16": k16 / reference,
        "ratio_wall_samples_per_second": median("st_oblique_k1", "wall_samples_per_second")
        / median("open_clip_train", "wall_samples_per_second"),
        "k16_time_per_sample_vs_k1": k1 / k16,
        "image_positions_ratio": (patches + args.num_tokens) / (patches + 1),
        "peak_rss_mb": {name: median(name, "peak_rss_mb") for name in runs},
        "ratio_peak_rss": median("st_oblique_k1", "peak_rss_mb") / median("open_clip_train", "peak_rss_mb"),
        "steady_samples_per_second": {name: median(name, "steady_samples_per_second") for name in runs},
        "runs": runs,
    }


if __name__ == "__main__":
    main()
