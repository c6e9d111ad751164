"""``st-oblique demo`` on a busy machine: wall time and CPU time with torch's thread defaults and with the fixes.

torch runs its CPU kernels on one OpenMP thread per core; between parallel regions the threads spin waiting for
work. When other processes keep the cores busy, the spinning competes with the work. Each setting runs the whole
demo (60 training steps, two evaluations, save and reload) in a fresh process, alternating settings over the
repeats, while ``--busy`` processes of pure-Python busy loops share the machine (on top of whatever else runs on
it: the load average before and after each run is recorded):

- ``torch_defaults``: torch imported before the command starts (so the command's OpenMP settings come too late),
  nothing set: what st-oblique did before ``st_oblique.app.threads``;
- ``passive``: ``st-oblique demo`` (OMP_WAIT_POLICY=PASSIVE, set by the command before torch loads);
- ``passive_threads_1``: ``st-oblique demo --threads 1``;
- ``active_threads_1``: torch imported first, then ``torch.set_num_threads(1)``.

CPU time is the run's user + system time (``resource.getrusage(RUSAGE_CHILDREN)``), i.e. what the run took from
the machine. Medians over the repeats; ratios against ``torch_defaults`` of the same invocation.

    python evaluation/benchmarks/demo_threads.py --busy 1 --repeats 2          # ~15 min on 2 busy cores
    python evaluation/benchmarks/demo_threads.py --busy 0 --repeats 1 --settings torch_defaults passive
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository's evaluation package (its output rules) is importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from evaluation.study_output import add_output_option, checked_output

BUSY_LOOP = "while True: pass"
TORCH_FIRST = (
    "import sys, torch; {threads}from st_oblique.app.cli import main; sys.exit(main(sys.argv[1:]))"
)
SETTINGS = {
    "torch_defaults": ([sys.executable, "-c", TORCH_FIRST.format(threads="")], {}),
    "passive": ([sys.executable, "-m", "st_oblique"], {}),
    "passive_threads_1": ([sys.executable, "-m", "st_oblique"], {"threads": 1}),
    "active_threads_1": ([sys.executable, "-c", TORCH_FIRST.format(threads="torch.set_num_threads(1); ")], {}),
}
"""``(command prefix, st-oblique options)`` of each setting; the demo's arguments follow."""


def run_once(setting: str, output_dir: Path, steps: int | None) -> dict:
    """One demo run in a fresh process: wall and CPU seconds, load averages, the torch threads it reported."""
    prefix, options = SETTINGS[setting]
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
    arguments = ["demo", "--output-dir", str(output_dir), "--no-progress", "--overwrite"]
    if steps:
        arguments += ["--steps", str(steps)]
    if options.get("threads"):
        arguments += ["--threads", str(options["threads"])]
    load_before = os.getloadavg()
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run([*prefix, *arguments], env=env, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{setting}: the demo failed:\n{done.stderr[-3000:]}")
    accuracy = json.loads((output_dir / "demo_report.json").read_text(encoding="utf-8"))["trained_accuracy"]
    return {
        "setting": setting,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(usage.ru_utime - usage_before.ru_utime + usage.ru_stime - usage_before.ru_stime, 2),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "trained_accuracy": accuracy,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=1, help="busy-loop processes running during the runs")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting (alternating)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--steps", type=int, help="training steps of the demo (default: the demo's)")
    add_output_option(parser, "benchmarks/demo_threads.json", option="--output", what="the JSON file")
    args = parser.parse_args(argv)
    checked_output(parser, args.output, args.overwrite)
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.busy)]
    runs = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            for repeat in range(args.repeats):
                for setting in args.settings:
                    run = run_once(setting, Path(folder) / "demo", args.steps)
                    runs.append({"repeat": repeat, **run})
                    print(json.dumps(runs[-1]), flush=True)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    medians = {
        setting: {
            key: statistics.median(run[key] for run in runs if run["setting"] == setting)
            for key in ("wall_seconds", "cpu_seconds")
        }
        for setting in args.settings
    }
    baseline = medians.get("torch_defaults")
    result = {
        "command": " ".join(["python", "evaluation/benchmarks/demo_threads.py", *(argv if argv is not None else sys.argv[1:])]),
        "busy_processes": args.busy,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "note": "a shared machine: other sessions' work ran too (load averages per run)",
        "medians": medians,
        "ratios_vs_torch_defaults": {
            setting: {key: round(value / baseline[key], 3) for key, value in values.items()}
            for setting, values in medians.items()
        } if baseline else None,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"Written {args.output}")
    return result


if __name__ == "__main__":
    main()
