"""What ``st-oblique app`` costs: building its index, loading it again, and answering queries.

The model is the LiT-style dual encoder of the README built from ``../shared/weights`` (all-MiniLM-L6-v2 text tower
+ EfficientNet-Lite0 image tower, K=16 tokens of d=32, **heads untrained**: random with seed 0, which costs the same
time and memory as trained ones) unless ``--model`` names a saved model. The corpus is Flickr8k-1k: its 1,000 photos
(extracted once from the shared tar into a temporary folder, not timed) and their 5,000 captions, as
``st-oblique app MODEL --captions captions.tsv --images-root photos`` indexes them.

Two processes, each measured from its own start, both with torch's default threads:

1. **build**: load the model, encode the 1,000 images and the 5,000 captions into the faiss indexes and write them
   with the manifest (what the first ``st-oblique app`` run does); seconds per part, peak RSS.
2. **serve**: a fresh process as a later ``st-oblique app`` run: load the model, check the manifest (which hashes the
   weights) and load the indexes; then 21 different text queries (the first one measured alone: "first query";
   the median of the next 20: "steady"), each ``engine.search`` = encode the query + exact inner-product search of
   the images and of the captions, top 10 each; the per-token view of the top image (``engine.explain``: the pair
   re-encoded, K cosines, the attention maps and their figure), first and median; an image query (an indexed photo
   as the query); peak RSS.

These are engine-level latencies (what the page's handlers run), without gradio's queue and the browser's
rendering. The machine is shared: ``uptime``'s load averages before and after are in the JSON.

    python evaluation/benchmarks/search_app.py --output evaluation/results/benchmarks/search_app.json
    python evaluation/benchmarks/search_app.py --model tiny_model --captions c.tsv --images photos --output /tmp/s.json
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
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = REPO_ROOT / "evaluation" / "results" / "benchmarks" / "search_app.json"
SHARED = REPO_ROOT.parent / "shared"
QUERIES = [
    "a dog runs on the beach",
    "two children play in the snow",
    "a man rides a bicycle down a hill",
    "a black and white dog jumps over a fence",
    "people walk along a busy city street",
    "a girl in a pink dress",
    "a surfer rides a wave",
    "a brown dog swims in a lake",
    "a crowd watches a football game",
    "a boy climbs a rock wall",
    "two dogs fight over a stick",
    "a woman sits on a bench in the park",
    "a motorcyclist on a dirt track",
    "a baby smiles at the camera",
    "a group of people stand outside a building",
    "a man in a red jacket skis down a slope",
    "a child splashes in a fountain",
    "a horse runs in a field",
    "a skateboarder does a trick on a ramp",
    "an old man sits on the steps",
    "a little girl holds a balloon",
]
"""21 queries: the first is timed alone, the median of the other 20 is the steady latency."""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=SHARED / "weights", help="folder with both backbones")
    parser.add_argument(
        "--data", type=Path, default=SHARED / "data" / "flickr8k_1k", help="Flickr8k-1k (captions + tar)"
    )
    parser.add_argument("--model", type=Path, help="a saved oblique model instead of the untrained LiT")
    parser.add_argument("--captions", type=Path, help="a caption table instead of Flickr8k-1k's (with --images)")
    parser.add_argument("--images", type=Path, help="the folder of --captions' images")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON file")
    parser.add_argument("--threads", type=int, help="torch threads of the measured processes (default: torch's)")
    parser.add_argument("--phase", choices=["build", "serve"], help=argparse.SUPPRESS)  # the two measured processes
    parser.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        result = run_phase(args)
        print(json.dumps(result))
        return result
    if (args.captions is None) != (args.images is None):
        parser.error("--captions and --images go together")

    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="search_app-") as folder:
        work = Path(folder)
        model = args.model or build_untrained_lit(args.weights, work / "lit-untrained")
        captions, images = (args.captions, args.images) if args.captions else extract_flickr(args.data, work)
        common = [
            "--model",
            str(model),
            "--captions",
            str(captions),
            "--images",
            str(images),
            "--index",
            str(work / "index"),
        ]
        common += ["--threads", str(args.threads)] if args.threads else []
        build = child(["--phase", "build", *common])
        serve = child(["--phase", "serve", *common])
        index_bytes = {path.name: path.stat().st_size for path in sorted((work / "index").iterdir())}
    result = {
        "command": "python evaluation/benchmarks/search_app.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch_threads": build["torch_threads"],
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "note": "a shared machine: other jobs ran alongside; absolute times depend on the load",
        },
        "model": "untrained LiT dual encoder (all-MiniLM-L6-v2 + tf_efficientnet_lite0, K=16, d=32, seed 0)"
        if args.model is None
        else str(args.model),
        "build": build,
        "serve": serve,
        "index_bytes": index_bytes,
        "wall_seconds": round(time.time() - started, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(summary(result))
    print(f"Written {args.output}")
    return result


def summary(result: dict) -> str:
    build, serve = result["build"], result["serve"]
    return (
        f"build: {build['num_images']} images in {build['built_seconds']['images']:.1f} s, {build['num_captions']} "
        f"captions in {build['built_seconds']['captions']:.1f} s (model load {build['model_load_seconds']:.1f} s, "
        f"peak RSS {build['peak_rss_mb']:.0f} MB)\n"
        f"serve: model load {serve['model_load_seconds']:.1f} s, index load {serve['index_load_seconds']:.2f} s; "
        f"text query first {serve['first_query_ms']:.0f} ms, steady median {serve['steady_query_ms']:.1f} ms; "
        f"per-token view first {serve['first_explain_ms']:.0f} ms, median {serve['steady_explain_ms']:.0f} ms; "
        f"image query median {serve['image_query_ms']:.0f} ms; peak RSS {serve['peak_rss_mb']:.0f} MB\n"
        f"load average before {result['machine']['load_average_before']}, "
        f"after {result['machine']['load_average_after']}"
    )


def child(arguments: list[str]) -> dict:
    """Run one phase in its own process; its last output line is its JSON."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *arguments],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO_ROOT,
    )
    if completed.returncode != 0:
        raise SystemExit(f"phase {arguments[1]} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def build_untrained_lit(weights: Path, output: Path) -> Path:
    import torch

    import st_oblique

    torch.manual_seed(0)
    model = st_oblique.oblique_dual_encoder(
        str(weights / "all-MiniLM-L6-v2"),
        str(weights / "tf_efficientnet_lite0"),
        num_tokens=16,
        token_dim=32,
        device="cpu",
    )
    model.save(str(output))
    return output


def extract_flickr(data: Path, work: Path) -> tuple[Path, Path]:
    """Flickr8k-1k's photos in a folder (what a user points the app at) and its caption table."""
    photos = work / "photos"
    photos.mkdir()
    with tarfile.open(data / "flickr8k_1k_images_256.tar") as archive:
        for member in archive.getmembers():
            if member.isfile():
                (photos / PurePosixPath(member.name).name).write_bytes(archive.extractfile(member).read())
    return data / "captions.tsv", photos


def run_phase(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    import torch

    from st_oblique.app.search_app.corpus import corpus_from_captions
    from st_oblique.app.search_app.engine import open_engine
    from st_oblique.evaluation.model_loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    imported = time.perf_counter()
    model = load_model(str(args.model), device="cpu")
    loaded = time.perf_counter()
    corpus = corpus_from_captions(args.captions, images_root=args.images)
    engine = open_engine(model, corpus, args.index, name=str(args.model), show_progress_bar=False)
    opened = time.perf_counter()
    result = {
        "import_seconds": round(imported - started, 2),
        "model_load_seconds": round(loaded - imported, 2),
        "torch_threads": torch.get_num_threads(),
        "num_images": len(engine.indexes.images),
        "num_captions": len(engine.indexes.captions),
    }
    if args.phase == "build":
        if set(engine.indexes.built) != {"images", "captions"}:
            raise SystemExit(f"expected a fresh index at {args.index}, got {engine.indexes.describe()}")
        result["built_seconds"] = {kind: round(seconds, 2) for kind, seconds in engine.indexes.built.items()}
        result["open_seconds"] = round(opened - loaded, 2)
    else:
        if engine.indexes.built:
            raise SystemExit(f"expected the cached index to be reused, got {engine.indexes.describe()}")
        result["index_load_seconds"] = round(opened - loaded, 3)  # the corpus listing, the weights hash, the files
        query_times, explain_times = [], []
        for query in QUERIES:
            start = time.perf_counter()
            results = engine.search(engine.text_query(query), engine.num_tokens, top_k=10)
            query_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            engine.explain(query, results.images[0], engine.num_tokens)
            explain_times.append(time.perf_counter() - start)
        image_times = []
        for name in corpus.images[:5]:
            start = time.perf_counter()
            engine.search(engine.image_query(corpus.image_path(name)), engine.num_tokens, top_k=10)
            image_times.append(time.perf_counter() - start)
        result.update(
            {
                "first_query_ms": round(1000 * query_times[0], 1),
                "steady_query_ms": round(1000 * statistics.median(query_times[1:]), 2),
                "steady_query_ms_range": [round(1000 * min(query_times[1:]), 2), round(1000 * max(query_times[1:]), 2)],
                "first_explain_ms": round(1000 * explain_times[0], 1),
                "steady_explain_ms": round(1000 * statistics.median(explain_times[1:]), 1),
                "image_query_ms": round(1000 * statistics.median(image_times), 1),
                "queries": len(QUERIES),
            }
        )
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


if __name__ == "__main__":
    main()
