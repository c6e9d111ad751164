"""Oblique vs multi-vector retrieval at equal bytes: one command, every arm, paired seeds, timings.

    python -m evaluation.studies.multivector                                   # -> ./multivector-study
    python -m evaluation.studies.multivector --output-dir evaluation/results/multivector   # the committed results
    python -m evaluation.studies.multivector --smoke --output-dir /tmp/mv      # CI-sized, seconds to a minute

From all-MiniLM-L6-v2 (``<shared>/weights``), trained on the same pairs, batches and step budget, with the
encoder learning rate chosen per arm on a validation split (seed 0; seeds 1.. reuse it):

1. oblique K=16, d=32 (``st_oblique.oblique_text_model`` + ``ObliqueContrastiveLoss``): 512 floats, a dot product;
2. ``MultiVectorEncoder`` with 32-dim token vectors, trained pooling-aware (``MultiVectorTokenPoolingLoss`` over
   no pooling and ``HierarchicalTokenPooling(max_tokens=16)``): documents pooled to at most 16 vectors (at most 512
   floats), MaxSim; unpooled (every token) as the quality ceiling;
3. MUVERA fixed-dimensional encodings of arm 2's vectors at 512 floats (designs chosen on validation);
4. one 512-dim unit vector (mean pooling, a 512-dim ``Dense``, ``MultipleNegativesRankingLoss``).

Tasks: SciFact (nDCG@10, recall@100), Flickr8k-1k caption→caption (recall@10), STSb test (Spearman); then, on the
seed-0 models, index build time, queries per second and index bytes (exact search and HNSW) measured alternately
in one process (:mod:`evaluation.studies.multivector_timing`).

Writes to ``--output-dir`` (default ``./multivector-study``, never the committed results unless told):
``runs/*.json`` (one per training run, reused when the command is run again), ``runs/derived/*.json`` (data notes,
timings), ``results.md``, ``summary.json`` and ``*.png``. Trained seed-0 models are kept in ``--cache-dir`` for the
timing phase.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from evaluation.studies.fixed_dimensional_encoding import FDEConfig
from evaluation.studies.run_store import RunStore, spec_id
from evaluation.studies.topology import environment, load_config

logger = logging.getLogger("evaluation.studies.multivector")

DEFAULT_CONFIG = Path(__file__).with_name("multivector.yaml")
MINIMUM_SENTENCE_TRANSFORMERS = (6, 3)


def require_sentence_transformers() -> None:
    """The study needs ``HierarchicalTokenPooling`` and ``MultiVectorTokenPoolingLoss`` (sentence-transformers 6.3)."""
    import sentence_transformers

    version = tuple(int(part) for part in sentence_transformers.__version__.split(".")[:2] if part.isdigit())
    if version < MINIMUM_SENTENCE_TRANSFORMERS:
        raise SystemExit(
            f"The multi-vector study needs sentence-transformers >= 6.3 (HierarchicalTokenPooling, "
            f"MultiVectorTokenPoolingLoss); this environment has {sentence_transformers.__version__}. "
            'Install it with: pip install "sentence-transformers>=6.3"'
        )


def fde_designs(config: dict[str, Any], token_dim: int) -> dict[str, FDEConfig]:
    """The MUVERA designs of the config (``{name: FDEConfig}``), each checked to give the configured floats."""
    designs = {}
    for name, design in config["designs"].items():
        fde = FDEConfig(dimension=token_dim, seed=config.get("seed", 0), **design)
        if fde.output_dimension != config["output_dimension"]:
            raise ValueError(
                f"MUVERA design {name!r} ({fde.describe()}) gives {fde.output_dimension} floats; the study compares "
                f"at muvera.output_dimension={config['output_dimension']}. Change the design or the final_dimension."
            )
        designs[name] = fde
    return designs


def validation_score(metrics: dict[str, dict[str, float]]) -> float:
    """What a learning rate or a MUVERA design is chosen by: mean of SciFact nDCG@10 and Flickr recall@10."""
    return (metrics["scifact"]["ndcg@10"] + metrics["flickr"]["recall@10"]) / 2


def study_budget(config: dict[str, Any]) -> dict[str, Any]:
    """What every run shares (part of each run's specification)."""
    return {key: config[key] for key in ("model", "data", "train", "muvera")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.studies.multivector", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="tiny subsets, 1 seed, a few steps (CI)")
    parser.add_argument(
        "--output-dir",
        default="multivector-study",
        help="where records, tables and plots go (default: %(default)s; the committed results are in "
        "evaluation/results/multivector)",
    )
    parser.add_argument("--shared-dir", help="folder with data/ and weights/ (default: the config's, ../shared)")
    parser.add_argument("--model", help="base encoder path (default: <shared>/weights/<config model>)")
    parser.add_argument("--cache-dir", help="trained seed-0 models for the timing phase (default: ~/.cache/...)")
    parser.add_argument("--phase", choices=["train", "timing", "report", "all"], default="all",
                        help="train: the runs; timing: seed-0 models' speed; report: tables from stored records")
    parser.add_argument("--threads", type=int, help="torch threads (default: the config's)")
    parser.add_argument("--rerun", action="store_true", help="ignore stored run records")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "transformers", "httpx", "datasets", "st_oblique"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    require_sentence_transformers()

    config = load_config(args.config, smoke=args.smoke)
    shared = Path(args.shared_dir or config.get("shared_dir", "../shared"))
    if not (shared / "data").is_dir():
        parser.error(f"{shared} has no data/ folder; pass --shared-dir (the study needs the real data).")
    model_path = args.model or str(shared / "weights" / config["model"])
    if not Path(model_path).is_dir():
        parser.error(f"No base encoder at {model_path}; pass --model PATH or --shared-dir.")
    output_dir = Path(args.output_dir)
    cache_dir = Path(args.cache_dir or Path.home() / ".cache" / "st_oblique" / "multivector")
    threads = args.threads or config.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    if args.model:
        config = {**config, "model": str(model_path)}

    from evaluation.studies import multivector_report
    from evaluation.studies.multivector_data import build_study_data

    store = RunStore(output_dir / "runs", rerun=args.rerun)
    data = functools.cache(lambda: build_study_data(config["data"], shared))
    timings: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    base = {"regime": "multivector", "budget": study_budget(config)}
    timings["data_notes"] = store.get_or_compute("data_notes", base, lambda: data().notes)
    start, cpu_start = time.monotonic(), time.process_time()
    run_missing = args.phase in ("train", "all")
    if args.phase == "all":  # the timing phase needs only the seed-0 models: measure it before the other seeds
        records = run_all(config, model_path, data, store, cache_dir, seeds=config["seeds"][:1])
        if config.get("timing"):
            phase_start = time.monotonic()
            run_timing({**config, "_shared": str(shared)}, model_path, data, store, cache_dir,
                       choose(config, records), base)
            timings["timing_phase_wall_seconds"] = time.monotonic() - phase_start
        store.rerun = False  # --rerun: what this invocation just stored is fresh; reuse it below
    records = run_all(config, model_path, data, store, cache_dir, run_missing=run_missing)
    timings["train_phase_wall_seconds"] = time.monotonic() - start
    selection = choose(config, records)
    timing = None
    if args.phase == "timing" and config.get("timing"):
        phase_start = time.monotonic()
        timing = run_timing({**config, "_shared": str(shared)}, model_path, data, store, cache_dir, selection, base)
        timings["timing_phase_wall_seconds"] = time.monotonic() - phase_start
    elif config.get("timing"):
        timing = stored_value(store, "timing", timing_spec(base, config, selection))
        if timing is None and args.phase == "all":
            raise RuntimeError("The timing phase ran but its record is missing.")
    timings["total_wall_seconds"] = time.monotonic() - start
    timings["main_process_cpu_seconds"] = time.process_time() - cpu_start
    timings["load_average_at_end"] = os.getloadavg()
    summary = {
        "command": " ".join(["python", "-m", "evaluation.studies.multivector", *(argv if argv is not None else sys.argv[1:])]),
        "smoke": args.smoke,
        "config": config,
        "selection": selection,
        "timings": timings,
        "runs_executed": store.ran,
        "runs_reused": len(records) - store.ran,  # the "all" phase looks the seed-0 records up twice
        "environment": environment(),
    }
    multivector_report.write_report(output_dir, config, records, selection, timing, summary)
    logger.info("Wrote %s (ran %d runs, reused %d)", output_dir / "results.md", store.ran, len(records) - store.ran)
    return 0


def run_all(
    config, model_path: str, data, store: RunStore, cache_dir: Path, run_missing: bool = True, seeds=None
) -> list[dict]:
    """The runs, cheapest first: learning-rate selection at seed 0 (validation only; the models are kept), the
    chosen seed-0 model on the test tasks, then the other seeds at the chosen learning rate (test only).

    ``seeds`` limits the main runs (default: the config's); stored records are reused; with ``run_missing=False``
    nothing is trained (the report of what is stored).
    """
    from evaluation.studies.multivector_arms import StudyArm, TrainSettings

    arms = {name: StudyArm.from_config(name, spec) for name, spec in config["arms"].items()}
    settings = TrainSettings(**config["train"])
    base = {"regime": "multivector", "budget": study_budget(config)}
    grid, all_seeds = config["lr_selection"]["grid"], config["seeds"]
    seeds = all_seeds if seeds is None else seeds
    records: list[dict] = []

    def run(arm, phase: str, seed: int, learning_rate: float, compute) -> dict | None:
        spec = {**base, "phase": phase, "arm": arm.name, "arm_config": arm.__dict__, "seed": seed,
                "learning_rate": learning_rate}
        if not run_missing:
            stored = store.stored(lambda s, spec=spec: s == json.loads(json.dumps(spec, default=str)))
            store.reused += bool(stored)
            return stored[0] if stored else None
        record = store.get_or_run(spec, lambda: compute(spec))
        logger.info("%s %s seed=%d lr=%g: %s (%.0f s)", phase, arm.name, seed, learning_rate,
                    " ".join(f"{split}: {_short(m)}" for split, m in record["metrics"].items()), record["wall_seconds"])
        return record

    def select(arm, learning_rate):
        def compute(spec):
            return train_and_evaluate(arm, model_path, data(), settings, config, all_seeds[0], learning_rate,
                                      ("validation",), cache_dir / "models" / spec_id(spec))

        return run(arm, "select", all_seeds[0], learning_rate, compute)

    for arm in arms.values():
        records += [r for r in (select(arm, lr) for lr in grid) if r]
    chosen = choose(config, records)["learning_rates"]
    for seed in seeds:
        for arm in arms.values():
            if arm.name not in chosen:
                continue
            learning_rate = chosen[arm.name]
            if seed == all_seeds[0]:
                selected = next(r for r in records if r["spec"]["arm"] == arm.name
                                and r["spec"]["learning_rate"] == learning_rate)

                def compute(spec, arm=arm, selected=selected):
                    return evaluate_saved(arm, Path(selected["saved_model"]), data(), settings, config, selected)
            else:

                def compute(spec, arm=arm, seed=seed, learning_rate=learning_rate):
                    return train_and_evaluate(arm, model_path, data(), settings, config, seed, learning_rate,
                                              ("test",), None)

            record = run(arm, "main", seed, learning_rate, compute)
            if record:
                records.append(record)
    return records


def _short(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    parts = []
    for view, tasks in metrics.items():
        if "_muvera_" in view:
            continue
        values = [f"{task}={m.get('ndcg@10', m.get('recall@10', m.get('spearman'))):.3f}" for task, m in tasks.items()]
        parts.append(f"{view}[{' '.join(values)}]")
    return " ".join(parts)


def train_and_evaluate(arm, model_path, data, settings, config, seed, learning_rate, splits, save_to: Path | None):
    """Train the arm, evaluate it on ``splits`` (``"validation"``, ``"test"``) and optionally keep the model."""
    from evaluation.studies.multivector_arms import evaluate_arm, train_arm

    model, info = train_arm(arm, model_path, data.pairs, settings, seed, learning_rate)
    fde = fde_designs(config["muvera"], arm.token_dim) if arm.kind == "multivector" else None
    start = time.monotonic()
    metrics = {split: evaluate_arm(arm, model, getattr(data, split), settings.encode_batch_size, fde) for split in splits}
    if save_to is not None:
        model.save(str(save_to))
    return {**info, "metrics": metrics, "eval_seconds": time.monotonic() - start, "num_pairs": len(data.pairs),
            "saved_model": str(save_to) if save_to else None}


def evaluate_saved(arm, path: Path, data, settings, config, selected: dict) -> dict:
    """The chosen seed-0 model (kept by its selection run) on the test tasks; training figures from that run."""
    from evaluation.studies.multivector_arms import evaluate_arm

    if not path.is_dir():
        raise FileNotFoundError(
            f"The selection run of {arm.name} kept its model in {path}, which is gone; run again with --rerun (or the "
            "same --cache-dir as the selection runs)."
        )
    model = load_model(arm, path)
    fde = fde_designs(config["muvera"], arm.token_dim) if arm.kind == "multivector" else None
    start = time.monotonic()
    test = evaluate_arm(arm, model, data.test, settings.encode_batch_size, fde)
    training = {key: selected[key] for key in ("train_seconds", "train_cpu_seconds", "steps", "loss_history")}
    return {**training, "metrics": {"test": test}, "eval_seconds": time.monotonic() - start,
            "num_pairs": len(data.pairs), "saved_model": str(path), "trained_by": selected["spec"]["phase"]}


def choose(config: dict[str, Any], records: list[dict]) -> dict[str, Any]:
    """The learning rate of each arm (best validation score of its primary view at seed 0) and the MUVERA view
    (best validation score among the designs and document sources, on the chosen multi-vector run)."""
    from evaluation.studies.multivector_arms import StudyArm, primary_view

    seed0 = config["seeds"][0]
    learning_rates, muvera, trials = {}, {}, {}
    for name, spec in config["arms"].items():
        arm = StudyArm.from_config(name, spec)
        mine = [r for r in records if r["spec"]["arm"] == name and r["spec"]["phase"] == "select"
                and r["spec"]["seed"] == seed0]
        if not mine:
            continue
        scored = {r["spec"]["learning_rate"]: validation_score(r["metrics"]["validation"][primary_view(arm)])
                  for r in mine}
        trials[name] = scored
        learning_rates[name] = max(scored, key=scored.get)
        if arm.kind == "multivector":
            best = next(r for r in mine if r["spec"]["learning_rate"] == learning_rates[name])
            candidates = {view: validation_score(tasks) for view, tasks in best["metrics"]["validation"].items()
                          if "_muvera_" in view}
            muvera[name] = {"view": max(candidates, key=candidates.get), "validation": candidates}
    return {"learning_rates": learning_rates, "validation_scores": trials, "muvera": muvera}


def timing_spec(base: dict, config: dict, selection: dict) -> dict:
    return {**base, "timing": config["timing"], "selection": {k: selection[k] for k in ("learning_rates",)},
            "muvera_views": {name: chosen["view"] for name, chosen in selection["muvera"].items()}}


def run_timing(config, model_path, data, store: RunStore, cache_dir: Path, selection: dict, base: dict) -> dict:
    """Reload the chosen seed-0 models, encode the timing corpus, score it (seed-0 quality on the larger corpus) and
    time every view alternately."""

    def compute() -> dict:
        from evaluation.studies.multivector_arms import StudyArm, encode_retrieval, evaluate_retrieval
        from evaluation.studies.multivector_data import read_scifact, scifact_task
        from evaluation.studies.multivector_timing import time_views

        corpus, queries, qrels = read_scifact(Path(config["_shared"]) / "data" / "scifact_beir")
        corpus_config = config["timing"]["corpus"]
        task = scifact_task("scifact-timing", corpus, queries, qrels["test"], corpus_config.get("queries"),
                            corpus_config.get("corpus_size"), config["data"]["seed"])
        views, quality, encode_seconds = {}, {}, {}
        for name, spec in config["arms"].items():
            arm = StudyArm.from_config(name, spec)
            if name not in selection["learning_rates"]:
                continue
            model = load_model(arm, model_saved_for(config, base, arm, selection["learning_rates"][name], cache_dir))
            fde = None
            if arm.kind == "multivector":
                chosen = selection["muvera"][name]["view"]
                design = chosen.split("_muvera_", 1)[1].rsplit("_", 1)[0]
                fde = {design: fde_designs(config["muvera"], arm.token_dim)[design]}
            start = time.monotonic()
            arm_views = encode_retrieval(arm, model, task, config["train"]["encode_batch_size"], fde)
            encode_seconds[name] = time.monotonic() - start
            for view_name, view in arm_views.items():
                if "_muvera_" in view_name and view_name != selection["muvera"][name]["view"]:
                    continue
                views[view_name] = view
                quality[view_name] = evaluate_retrieval(task, view)
                quality[view_name]["bytes_per_document"] = view.bytes_per_document()
            del model
        timing = time_views(views, **config["timing"]["measure"])
        return {"quality": quality, "timing": timing, "encode_seconds": encode_seconds,
                "corpus": {"queries": len(task.queries), "documents": len(task.corpus)}}

    return store.get_or_compute("timing", timing_spec(base, config, selection), compute)


def stored_value(store: RunStore, name: str, spec: dict) -> Any:
    """A derived value stored by :meth:`RunStore.get_or_compute` for ``spec``, or None (never computes)."""
    path = store.folder / "derived" / f"{name}-{spec_id(spec)}.json"
    if not path.is_file():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    return stored["value"] if stored.get("spec") == json.loads(json.dumps(spec, default=str)) else None


def model_saved_for(config: dict, base: dict, arm, learning_rate: float, cache_dir: Path) -> Path:
    spec = {"regime": "multivector", "budget": base["budget"], "phase": "select", "arm": arm.name,
            "arm_config": arm.__dict__, "seed": config["seeds"][0], "learning_rate": learning_rate}
    path = cache_dir / "models" / spec_id(spec)
    if not path.is_dir():
        raise FileNotFoundError(
            f"The seed-0 model of {arm.name} (lr {learning_rate:g}) is not in {path}: the timing phase needs the "
            "models the train phase saved. Run the train phase with the same --cache-dir (or --rerun it)."
        )
    return path


def load_model(arm, path: Path):
    if arm.kind == "oblique":
        import st_oblique

        return st_oblique.load(str(path), device="cpu")
    if arm.kind == "multivector":
        from sentence_transformers import MultiVectorEncoder

        return MultiVectorEncoder(str(path), device="cpu")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


__all__ = ["choose", "fde_designs", "main", "require_sentence_transformers", "run_all", "validation_score"]


if __name__ == "__main__":
    sys.exit(main())
