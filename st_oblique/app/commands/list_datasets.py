"""``st-oblique list``: the named evaluation datasets and the offline MTEB tasks."""

from __future__ import annotations

import argparse

NAME = "list"
HELP = "list the named zero-shot datasets and the offline MTEB tasks (for eval --dataset / --mteb-task)"
DESCRIPTION = HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> None:
    # mteb and the dataset readers are imported when the command runs, so that `--help` answers at once
    from st_oblique.app.demo import register_demo_eval_set
    from st_oblique.data.datasets import DATASETS
    from st_oblique.evaluation.mteb_tasks import LOCAL_TASKS

    register_demo_eval_set()  # `st-oblique eval` knows the demo's held-out digits: list them too

    print("Zero-shot datasets (--dataset):")
    for spec in DATASETS.values():
        print(f"  {spec.name:16} {spec.task:24} {spec.description}  [{spec.default_path or 'no files'}]")
    print(
        "  wds/<name>       either                   CLIP_benchmark WebDataset export (Hub: clip-benchmark/wds_<name>)"
    )
    print("  hf:<repo>        either                   Hugging Face dataset with image + label/caption columns")
    print("Offline MTEB tasks (--mteb-task; 'local' = all):")
    for name, task in LOCAL_TASKS.items():
        print(
            f"  {name:26} {task.metadata.type:24} [{task.default_path if isinstance(task.default_path, str) else ''}]"
        )
