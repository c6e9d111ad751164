"""The topology study: does the oblique manifold beat the sphere? One command, every arm, error bars.

    python -m evaluation.studies.topology --config evaluation/studies/topology.yaml            # regimes A, B and C
    python -m evaluation.studies.topology --config evaluation/studies/topology.yaml --regime C # one regime
    python -m evaluation.studies.topology --config evaluation/studies/topology.yaml --smoke    # CI-sized

- Regime A (:mod:`evaluation.studies.lit_heads`): LiT-style heads (st-oblique's ObliquePooling, K=1 for the
  sphere) on frozen EfficientNet-Lite0 / all-MiniLM-L6-v2 towers whose token states are computed once and cached
  (:mod:`evaluation.studies.tower_cache`); Flickr8k-1k split by image; clean and noisy captions; learning rate
  chosen per arm on the validation split; paired seeds; test retrieval and zero-shot Imagenette. Plus the
  temperature as a noise meter (learned scale vs caption noise, with and without a separate scale learning rate).
- Regime B (:mod:`evaluation.studies.text_finetune`): all-MiniLM-L6-v2 fine-tuned on text pairs with mean
  pooling + MultipleNegativesRankingLoss vs oblique heads; STSBenchmark, SICK-R, SciFact via the MTEB harness.
- Regime C (:mod:`evaluation.studies.from_scratch`): tiny dual encoders trained from scratch with K class tokens
  inside both towers (st-oblique's ClassTokenTransformer / ImageClassTokenTransformer + ObliquePooling, or the
  SPARO preset) on synthetic compositional scenes (:mod:`evaluation.studies.synthetic_scenes`, generated from a
  seed: no data files); retrieval on held-out images, zero-shot shape / colour / relation on held-out compositions,
  token-collapse diagnostics and per-token probes. Needs no shared data; ``workers`` runs in parallel processes.

``--regime all`` (the default) runs A, B and C; a regime not run is reported from its stored records.

Writes to the output folder (``--output-dir``, default ``runs/evaluation/topology``; the committed results in
``evaluation/results/topology`` only with ``--overwrite``): ``runs/*.json`` (one per run, reused when the command is
run again; the tower outputs are computed only for runs not stored), ``runs/derived/*.json`` (the data statistics
the report quotes), ``results.md`` (tables: mean ± sd over seeds, paired differences with 95% t-intervals),
``summary.json`` and ``*.png`` plots. The committed run records (the config's ``committed_results``) are copied
into the output folder first, so runs of the committed grid are reused, not repeated (``--rerun``: run everything).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from evaluation.studies import report
from evaluation.studies.lit_heads import Arm, LitData, TrainConfig, apply_pca, fit_pca, run_arm
from evaluation.studies.run_store import RunStore, spec_id
from evaluation.studies.splits import (
    caption_owners,
    flickr_text_pairs,
    msrp_paraphrase_pairs,
    noisy_caption_table,
    split_by_image,
)
from evaluation.studies.text_finetune import TextArm, TextTrainConfig, evaluate_text_model, finetune, text_tasks
from evaluation.studies.tower_cache import TowerCache
from evaluation.study_output import REPO_ROOT, add_output_option, checked_output, default_output, reuse_records

logger = logging.getLogger("evaluation.studies.topology")

DEFAULT_CONFIG = Path(__file__).with_name("topology.yaml")


def load_config(path: str | Path, smoke: bool = False) -> dict[str, Any]:
    """The YAML config; with ``smoke`` its ``smoke:`` section is merged over it (nested keys replaced)."""
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    overrides = config.pop("smoke", {}) or {}
    return _merge(config, overrides) if smoke else config


def _merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and value.get("_replace"):  # replace the whole section instead of merging
            merged[key] = {name: setting for name, setting in value.items() if name != "_replace"}
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.studies.topology", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="tiny subsets, 1 seed, a few steps (CI)")
    parser.add_argument("--regime", choices=["A", "B", "C", "all"], default="all", help="all: A, B and C")
    add_output_option(parser, "topology")
    parser.add_argument(
        "--reuse-records", type=Path,
        help="a folder of run records to reuse (default: the config's committed_results; --rerun: none)",
    )
    parser.add_argument("--shared-dir", help="folder with data/ and weights/ (default: the config's, ../shared)")
    parser.add_argument("--cache-dir", help="tower-output cache (default: ~/.cache/st_oblique/topology)")
    parser.add_argument("--threads", type=int, help="torch threads (default: the config's)")
    parser.add_argument("--rerun", action="store_true", help="ignore stored run records")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "transformers", "mteb", "httpx", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    config = load_config(args.config, smoke=args.smoke)
    shared = Path(args.shared_dir or config.get("shared_dir", "../shared"))
    if args.regime != "C" and (not (shared / "data").is_dir() or not (shared / "weights").is_dir()):
        parser.error(f"{shared} has no data/ and weights/ folders; pass --shared-dir (the study needs the real data).")
    if args.smoke and args.output_dir == default_output("topology"):
        args.output_dir = default_output("topology_smoke")
    output_dir = checked_output(parser, args.output_dir, args.overwrite)
    threads = args.threads or config.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    records_from = args.reuse_records or (REPO_ROOT / config["committed_results"] if config.get("committed_results") else None)
    if records_from and not args.rerun and Path(records_from).resolve() != output_dir.resolve():
        copied = reuse_records(Path(records_from) / "runs", output_dir / "runs")
        logger.info("Reusing %d run records of %s (copied into %s)", copied, records_from, output_dir / "runs")
    store = RunStore(output_dir / "runs", rerun=args.rerun)
    timings: dict[str, Any] = {}
    records: dict[str, list[dict]] = {"A": [], "B": [], "C": []}
    start = time.monotonic()
    if args.regime in ("A", "all"):
        regime_start = time.monotonic()
        records["A"] = run_regime_a(
            config["regime_a"], shared, args.cache_dir or config.get("cache_dir"), store, timings
        )
        timings["regime_a_wall_seconds"] = time.monotonic() - regime_start
    if args.regime in ("B", "all"):
        regime_start = time.monotonic()
        records["B"] = run_regime_b(config["regime_b"], shared, store)
        timings["regime_b_wall_seconds"] = time.monotonic() - regime_start
    if args.regime in ("C", "all") and "regime_c" in config:
        regime_start, cpu_start = time.monotonic(), time.process_time()
        timings["regime_c_load_average_at_start"] = os.getloadavg()
        records["C"] = run_regime_c(config["regime_c"], store, timings)
        timings["regime_c_wall_seconds"] = time.monotonic() - regime_start
        timings["regime_c_main_process_cpu_seconds"] = time.process_time() - cpu_start
        timings["regime_c_load_average_at_end"] = os.getloadavg()
    # A regime not run now is reported from its stored records of the same config (regimes can run in parallel).
    for regime, budget, section in (
        ("A", regime_a_budget, "regime_a"),
        ("B", regime_b_budget, "regime_b"),
        ("C", regime_c_budget, "regime_c"),
    ):
        if not records[regime] and section in config:
            wanted = json.loads(json.dumps(budget(config[section]), default=str))
            arms = set(config[section]["arms"])
            records[regime] = store.stored(
                lambda spec, regime=regime, wanted=wanted, arms=arms: (
                    spec["regime"] == regime and spec["budget"] == wanted and spec["arm"] in arms
                )
            )
    timings["total_wall_seconds"] = time.monotonic() - start
    reported = [record for regime_records in records.values() for record in regime_records]
    summary = {
        "command": " ".join(
            [sys.executable.rsplit("/", 1)[-1], "-m", "evaluation.studies.topology", *(argv or sys.argv[1:])]
        ),
        "smoke": args.smoke,
        "config": config,
        "timings": timings,
        "runs_executed": store.ran,
        "runs_reused": store.reused,
        "runs_reported": len(reported),
        "runs_reported_executed_now": sum(store.path(record["spec"]).name in store.executed for record in reported),
        "environment": environment(),
    }
    report.write_report(output_dir, config, records, summary)
    logger.info("Wrote %s (ran %d runs, reused %d)", output_dir / "results.md", store.ran, store.reused)
    return 0


def environment() -> dict[str, Any]:
    cpu = ""
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    import sentence_transformers

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "load_average_at_end": os.getloadavg(),
    }


# ---------------------------------------------------------------------------------------------------------------
# Regime A
# ---------------------------------------------------------------------------------------------------------------


def prepare_lit_data(config: dict[str, Any], shared: Path, cache_dir: str | None, timings: dict) -> LitData:
    """Load Flickr8k-1k and Imagenette, split by image, cache the tower outputs, fit and apply the PCA."""
    from st_oblique.data.templates import DEFAULT_TEMPLATES, class_prompts
    from st_oblique.evaluation import load_dataset

    start = time.monotonic()
    data_root = shared / "data"
    weights = shared / "weights"
    flickr = load_dataset("flickr8k_1k", data_root=data_root, max_samples=config.get("max_images"), seed=0)
    imagenette = load_dataset("imagenette", data_root=data_root, max_samples=config.get("imagenette_samples"), seed=0)
    splits = split_by_image(len(flickr), config["split"]["sizes"], seed=config["split"]["seed"])
    texts, owners = caption_owners(flickr.captions)
    offsets = np.concatenate([[0], np.cumsum([len(group) for group in flickr.captions])])
    captions_of = [list(range(offsets[i], offsets[i + 1])) for i in range(len(flickr))]
    templates = list(imagenette.templates or DEFAULT_TEMPLATES)[: config.get("num_templates")]
    prompts = class_prompts(imagenette.classnames, templates)

    cache = TowerCache(weights / config["text_tower"], weights / config["image_tower"], cache_dir=cache_dir)
    image_tokens = cache.image_tokens("flickr8k_1k", flickr.images)
    text_tokens, text_mask = cache.text_tokens("flickr8k_1k-captions", texts)
    zs_images = cache.image_tokens("imagenette", imagenette.images)
    prompt_tokens, prompt_mask = cache.text_tokens("imagenette-prompts", [p for group in prompts for p in group])

    notes: dict[str, Any] = {
        "tower_token_shapes": {"image": list(image_tokens.shape[1:]), "text_width": text_tokens.shape[-1]},
        "num_templates": len(templates),
        "split_sizes": {name: len(indices) for name, indices in splits.items()},
        "imagenette_images": len(imagenette),
    }
    # "first" arms read the text tower with K class tokens inside (a cache of its own per K)
    text_views = {}
    for count in sorted({Arm.from_config(name, spec).text_class_tokens for name, spec in config["arms"].items()} - {1}):
        class_cache = TowerCache(
            weights / config["text_tower"], weights / config["image_tower"], cache_dir=cache_dir, text_class_tokens=count
        )
        caption_view = class_cache.text_tokens("flickr8k_1k-captions", texts)
        prompt_view = class_cache.text_tokens("imagenette-prompts", [p for group in prompts for p in group])
        text_views[count] = (*caption_view, *prompt_view)
    timings["regime_a_cache_seconds"] = time.monotonic() - start

    pca = config.get("pca_dim") or {}
    train_captions = np.concatenate([captions_of[int(i)] for i in splits["train"]])
    if pca.get("image"):
        mean, components, kept = fit_pca(image_tokens[splits["train"]], None, pca["image"])
        image_tokens, zs_images = apply_pca(image_tokens, mean, components), apply_pca(zs_images, mean, components)
        notes["image_pca"] = {"dim": pca["image"], "variance_kept": kept}
    if pca.get("text"):
        # fitted on the plain tower's states and applied to every text view alike (the same inputs for every arm)
        mean, components, kept = fit_pca(text_tokens[train_captions], text_mask[train_captions], pca["text"])
        text_tokens, prompt_tokens = (
            apply_pca(text_tokens, mean, components),
            apply_pca(prompt_tokens, mean, components),
        )
        text_views = {
            count: (apply_pca(tokens, mean, components), mask, apply_pca(prompt_view, mean, components), prompt_mask)
            for count, (tokens, mask, prompt_view, prompt_mask) in text_views.items()
        }
        notes["text_pca"] = {"dim": pca["text"], "variance_kept": kept}
    timings["regime_a_prepare_seconds"] = time.monotonic() - start
    logger.info("Regime A data: %s", notes)
    return LitData(
        image_tokens=image_tokens.float(),
        text_tokens=text_tokens.float(),
        text_mask=text_mask,
        captions=[list(group) for group in flickr.captions],
        caption_owner=owners,
        captions_of=captions_of,
        splits=splits,
        zs_image_tokens=zs_images.float(),
        zs_labels=torch.tensor(imagenette.labels),
        zs_prompt_tokens=prompt_tokens.float(),
        zs_prompt_mask=prompt_mask,
        zs_prompt_class=torch.tensor([label for label, group in enumerate(prompts) for _ in group]),
        classnames=list(imagenette.classnames),
        notes=notes,
        text_views={
            count: (tokens.float(), mask, prompt_view.float(), prompt_mask)
            for count, (tokens, mask, prompt_view, prompt_mask) in text_views.items()
        },
    )


def regime_a_budget(config: dict[str, Any]) -> dict[str, Any]:
    """What every regime-A run shares (part of each run's specification)."""
    keys = ("split", "pca_dim", "max_images", "imagenette_samples", "num_templates", "image_tower", "text_tower")
    return {**config["train"], **{key: config.get(key) for key in keys}}


def regime_b_budget(config: dict[str, Any]) -> dict[str, Any]:
    """What every regime-B run shares (part of each run's specification)."""
    return {**config["train"], "pairs": config["pairs"], "tasks": config["tasks"], "model": config["model"]}


def run_regime_a(
    config: dict[str, Any], shared: Path, cache_dir: str | None, store: RunStore, timings: dict
) -> list[dict]:
    """Learning-rate selection, the main grid, and the noise meter; returns every run record.

    The tower outputs (the expensive part: minutes when not cached) are prepared only when a run is not stored; the
    data notes the report quotes are stored beside the runs, so a report from stored runs needs neither.
    """
    lit_data = functools.cache(lambda: prepare_lit_data(config, shared, cache_dir, timings))
    base = {"regime": "A", "budget": regime_a_budget(config)}
    timings["regime_a_data_notes"] = store.get_or_compute("regime_a_data_notes", base, lambda: lit_data().notes)
    arms = {name: Arm.from_config(name, spec) for name, spec in config["arms"].items()}
    train = TrainConfig(**config["train"])
    noise_seed = config["noise_seed"]
    tables: dict[float, Any] = {}

    def table(fraction: float):
        if fraction not in tables:
            data = lit_data()
            tables[fraction] = noisy_caption_table(data.captions, data.splits["train"], fraction, noise_seed)
        return tables[fraction]

    def run(phase: str, arm: Arm, fraction: float, seed: int, lr: float, scale_lr: float | None, splits) -> dict:
        spec = {
            **base,
            "phase": phase,
            "arm": arm.name,
            "arm_config": arm.spec(),
            "condition": f"noise{round(fraction * 100)}",
            "noise_fraction": fraction,
            "noise_seed": noise_seed,
            "seed": seed,
            "learning_rate": lr,
            "scale_learning_rate": scale_lr,
            "eval_splits": list(splits),
        }
        record = store.get_or_run(
            spec, lambda: run_arm(arm, lit_data(), table(fraction), train, seed, lr, scale_lr, tuple(splits))
        )
        logger.info(
            "A %s %s noise=%.2f seed=%d lr=%g: val R=%.3f%s scale=%.3g (%.0fs)",
            phase,
            arm.name,
            fraction,
            seed,
            lr,
            record["metrics"]["val"]["mean_recall"],
            f" test R={record['metrics']['test']['mean_recall']:.3f} acc1={record['metrics']['test']['acc1']:.3f}"
            if "test" in record["metrics"]
            else "",
            record["final_scale"],
            record["wall_seconds"],
        )
        return record

    records = []
    selection = config["lr_selection"]
    chosen_lr: dict[str, float] = {}
    for arm in arms.values():
        trials = [run("select", arm, 0.0, selection["seed"], lr, None, ("val",)) for lr in selection["grid"]]
        records += trials
        best = max(trials, key=lambda record: record["metrics"]["val"]["mean_recall"])
        chosen_lr[arm.name] = best["spec"]["learning_rate"]
    timings["regime_a_chosen_lr"] = chosen_lr

    for fraction in config["conditions"]:
        for seed in config["seeds"]:
            for arm in arms.values():
                records.append(run("main", arm, fraction, seed, chosen_lr[arm.name], None, ("val", "test")))

    meter = config["noise_meter"]
    for scale_lr, seeds in ((None, meter["seeds"]), (meter["scale_learning_rate"], meter["scale_lr_seeds"])):
        for fraction in meter["noise"]:
            for seed in seeds:
                for name in meter["arms"]:
                    records.append(run("main", arms[name], fraction, seed, chosen_lr[name], scale_lr, ("val", "test")))
    # The noise meter's clean and 30% runs are runs of the main grid: keep one record per specification.
    return list({spec_id(record["spec"]): record for record in records}.values())


# ---------------------------------------------------------------------------------------------------------------
# Regime B
# ---------------------------------------------------------------------------------------------------------------


def text_pairs(config: dict[str, Any], shared: Path) -> list[tuple[str, str]]:
    """Flickr8k same-image caption pairs (the 1000 images of the image-text study left out) and MSRP paraphrases."""
    import csv

    flickr_dir = shared / "data" / "flickr8k_1k"
    with open(flickr_dir / "captions.tsv", encoding="utf-8", newline="") as handle:
        study_images = {row["image"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)}
    counts = config["pairs"]
    pairs = flickr_text_pairs(
        flickr_dir / "captions_all_8091_images.csv", study_images, counts["flickr"], counts["seed"]
    )
    pairs += msrp_paraphrase_pairs(
        shared / "data" / "msr_paraphrase" / "msr-para-train.tsv", counts["msrp"], counts["seed"]
    )
    order = np.random.default_rng(counts["seed"]).permutation(len(pairs))
    return [pairs[index] for index in order]


def run_regime_b(config: dict[str, Any], shared: Path, store: RunStore) -> list[dict]:
    """Every text arm at every seed (the untouched model once), evaluated on the offline MTEB tasks.

    The pairs and tasks are loaded only when a run is not stored.
    """
    pairs = functools.cache(lambda: text_pairs(config, shared))
    tasks = functools.cache(lambda: text_tasks(config["tasks"], str(shared / "data")))
    model_path = str(shared / "weights" / config["model"])
    train = TextTrainConfig(**config["train"])
    base = {"regime": "B", "budget": regime_b_budget(config)}
    records = []
    for seed in config["seeds"]:
        for name, arm_config in config["arms"].items():
            arm = TextArm.from_config(name, arm_config)
            if arm.kind == "untouched" and seed != config["seeds"][0]:
                continue
            spec = {**base, "phase": "main", "arm": name, "arm_config": arm.spec(), "seed": seed}

            def run(arm=arm, seed=seed) -> dict:
                model, info = finetune(arm, model_path, pairs(), train, seed)
                start = time.monotonic()
                scores = evaluate_text_model(model, f"topology-{arm.name}-seed{seed}", tasks())
                return {**info, "metrics": scores, "eval_seconds": time.monotonic() - start, "num_pairs": len(pairs())}

            record = store.get_or_run(spec, run)
            logger.info(
                "B %s seed=%d: %s (%.0fs)",
                name,
                seed,
                {task: round(m["main_score"], 4) for task, m in record["metrics"].items()},
                record["wall_seconds"],
            )
            records.append(record)
    return records


# ---------------------------------------------------------------------------------------------------------------
# Regime C
# ---------------------------------------------------------------------------------------------------------------


def regime_c_budget(config: dict[str, Any]) -> dict[str, Any]:
    """What every regime-C run shares (part of each run's specification)."""
    return {key: config.get(key) for key in ("train", "towers", "world", "data")}


def run_regime_c(config: dict[str, Any], store: RunStore, timings: dict) -> list[dict]:
    """Learning-rate selection (validation split, clean captions) and the main grid, ``workers`` runs at a time.

    Each run is one process-local job (:func:`evaluation.studies.from_scratch.run_stored`): the worker renders the
    scenes once, trains the model from scratch and writes the run record; stored records are reused.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from evaluation.studies.from_scratch import run_stored
    from evaluation.studies.scratch_towers import ScratchArm, arm_grid_and_seeds

    arms = {name: ScratchArm.from_config(name, spec) for name, spec in config["arms"].items()}
    base = {"regime": "C", "budget": regime_c_budget(config)}
    section_json = json.dumps({key: config[key] for key in ("world", "data", "towers", "train")}, sort_keys=True)
    noise_seed = config["noise_seed"]
    workers = int(config.get("workers", 1))
    folder = str(store.folder)

    def data_notes() -> dict:
        from evaluation.studies.from_scratch import prepare_data

        return prepare_data({key: config[key] for key in ("world", "data")}).notes

    timings["regime_c_data_notes"] = store.get_or_compute("regime_c_data_notes", base, data_notes)

    def spec(phase: str, arm: ScratchArm, fraction: float, seed: int, lr: float, splits) -> dict:
        return {
            **base,
            "phase": phase,
            "arm": arm.name,
            "arm_config": arm.spec(),
            "condition": f"noise{round(fraction * 100)}",
            "noise_fraction": fraction,
            "noise_seed": noise_seed,
            "seed": seed,
            "learning_rate": lr,
            "eval_splits": list(splits),
        }

    def run_all(specs: list[dict]) -> list[dict]:
        specs = json.loads(json.dumps(specs, default=str))
        if workers <= 1:
            results = [run_stored(section_json, one, folder, rerun=store.rerun) for one in specs]
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                results = list(pool.map(run_stored, [section_json] * len(specs), specs, [folder] * len(specs),
                                        [1] * len(specs), [store.rerun] * len(specs)))
        for record, ran in results:
            store.ran += ran
            store.reused += not ran
            if ran:
                store.executed.add(store.path(record["spec"]).name)
            metrics = record["metrics"]
            logger.info(
                "C %s %s %s seed=%d lr=%g: val R=%.3f%s scale=%.3g (%.0fs wall, %.0fs CPU)",
                record["spec"]["phase"],
                record["spec"]["arm"],
                record["spec"]["condition"],
                record["spec"]["seed"],
                record["spec"]["learning_rate"],
                metrics["val"]["mean_recall"],
                f" test R={metrics['test']['mean_recall']:.3f} zs={metrics['test']['zs_mean_acc1']:.3f}"
                if "test" in metrics
                else "",
                record["final_scale"],
                record["wall_seconds"],
                record["cpu_seconds"],
            )
        return [record for record, _ in results]

    selection = config["lr_selection"]
    grid, seeds = arm_grid_and_seeds(config)
    trials = run_all(
        [spec("select", arm, 0.0, selection["seed"], lr, ("val",)) for arm in arms.values() for lr in grid[arm.name]]
    )
    chosen_lr = {}
    for name in arms:
        mine = [record for record in trials if record["spec"]["arm"] == name]
        chosen_lr[name] = max(mine, key=lambda record: record["metrics"]["val"]["mean_recall"])["spec"]["learning_rate"]
    timings["regime_c_chosen_lr"] = chosen_lr
    # the regime's seeds in both conditions first, then the headline arms' extra seeds: an interrupted study has
    # complete paired comparisons for as many seeds as it got to
    extra = sorted({seed for name in arms for seed in seeds[name]} - set(config["seeds"]))
    main_specs = [
        spec("main", arm, fraction, seed, chosen_lr[arm.name], ("val", "test"))
        for seed_group in ([seed for seed in config["seeds"]], extra)
        for fraction in config["conditions"]
        for seed in seed_group
        for arm in arms.values()
        if seed in seeds[arm.name]
    ]
    return trials + run_all(main_specs)



__all__ = [
    "load_config",
    "main",
    "prepare_lit_data",
    "regime_c_budget",
    "run_regime_a",
    "run_regime_b",
    "run_regime_c",
    "text_pairs",
]


if __name__ == "__main__":
    sys.exit(main())
