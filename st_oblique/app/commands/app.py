"""``st-oblique app``: search your own images (or sentences) with an oblique model in the browser, and see what each
of its K tokens matched.

Example::

    st-oblique app runs/lit-oblique --images ~/Pictures/holiday            # then open http://127.0.0.1:7860
    st-oblique app runs/lit-oblique --captions data/captions.tsv --images-root data/images
    st-oblique app runs/oblique-minilm --captions sentences.csv --caption-column text   # text <-> text
"""

from __future__ import annotations

import argparse
from pathlib import Path

from st_oblique.app.model_location import check_model_location
from st_oblique.app.options import positive_int
from st_oblique.errors import ObliqueConfigError

NAME = "app"
HELP = "search your images (or sentences) in the browser, with each token's contribution (gradio, offline)"
DESCRIPTION = (
    "Index a folder of images (--images DIR) or the captions of a table (--captions TABLE, with their images from "
    "--images-root DIR) with an oblique model, once (cached with a manifest; rebuilt only when the model or the "
    "files change), and serve a search page on 127.0.0.1: text -> images and captions, image -> images and "
    "captions, the ranking with the first k of the K tokens, and for a selected result the K per-token cosines and "
    "where the top image tokens look. Nothing leaves the machine: no analytics, no web fonts or CDN scripts, and "
    "only the indexed images are served. Needs the app extra: pip install 'st-oblique[app]'."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved oblique model folder or Hub id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, metavar="DIR", help="a folder of images (searched at any depth)")
    source.add_argument(
        "--captions",
        type=Path,
        metavar="TABLE",
        help="a .tsv/.csv table with a header row: captions (and, with --images-root, the images they describe)",
    )
    parser.add_argument("--images-root", type=Path, metavar="DIR", help="the folder holding the images of --captions")
    parser.add_argument(
        "--caption-column", help="the text column of --captions (default: caption, text, sentence, ...)"
    )
    parser.add_argument(
        "--image-column", default="image", help="the image column of --captions (with --images-root; default: image)"
    )
    parser.add_argument(
        "--index",
        type=Path,
        metavar="DIR",
        help="the index folder (default: a folder per model and corpus under ~/.cache/st-oblique/search-index)",
    )
    parser.add_argument(
        "--rebuild-index", action="store_true", help="re-encode everything even if the index is current"
    )
    parser.add_argument(
        "--index-only", action="store_true", help="build or update the index, then exit without serving"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: 127.0.0.1, this machine only; another address lets other machines "
        "see your images)",
    )
    parser.add_argument(
        "--port", type=int, default=7860, help="the port to listen on (default: 7860; 0: any free port)"
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=10, help="results per list at first (default: 10; the page has a control)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="images or captions encoded at once (default: 32)"
    )
    parser.add_argument("--device", help="cpu, cuda, mps... (default: the model's)")
    # --threads is every command's option (st_oblique.app.threads): 1 is often faster for single queries on a busy machine
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar while indexing")


def run(args: argparse.Namespace) -> None:
    if args.images_root is not None and args.captions is None:
        raise ObliqueConfigError(
            "--images-root goes with --captions TABLE; for a plain folder of images use --images DIR."
        )
    if not 0 <= args.port <= 65535:
        raise ObliqueConfigError(f"--port {args.port}: give a port between 1 and 65535 (0: any free port).")
    try:  # the app's dependencies are an optional extra
        import faiss  # noqa: F401
        import gradio  # noqa: F401
    except ImportError as error:
        raise ObliqueConfigError(
            f"st-oblique app needs the app extra ({error.name} is not installed): pip install 'st-oblique[app]'."
        ) from error
    # the model, torch and gradio are imported when the command runs, so that `--help` answers at once
    from st_oblique.app.search_app.corpus import corpus_from_captions, corpus_from_folder
    from st_oblique.app.search_app.engine import open_engine
    from st_oblique.app.search_app.index_cache import default_index_dir
    from st_oblique.devices import check_device
    from st_oblique.evaluation.model_loading import load_model

    check_device(args.device, name="--device")
    check_model_location(args.model)
    if args.images is not None:
        corpus = corpus_from_folder(args.images)
    else:
        corpus = corpus_from_captions(
            args.captions,
            images_root=args.images_root,
            caption_column=args.caption_column,
            image_column=args.image_column,
        )
    model = load_model(args.model, device=args.device)
    index_dir = args.index or default_index_dir(args.model, corpus)
    engine = open_engine(
        model,
        corpus,
        index_dir,
        name=args.model,
        batch_size=args.batch_size,
        show_progress_bar=not args.no_progress,
        rebuild=args.rebuild_index,
    )
    note = engine.indexes.describe()
    print(engine.describe())
    print(note)
    if args.index_only:
        return

    from st_oblique.app.search_app.server import BackgroundServer, create_app

    app = create_app(engine, top_k=args.top_k, index_note=note, host=args.host, port=args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"Warning: listening on {args.host}: other machines that can reach this one can search and view the "
            "indexed images. Use the default --host 127.0.0.1 to keep them private."
        )
    with BackgroundServer(app, host=args.host, port=args.port) as server:
        print(f"Search page: {server.url} (Ctrl-C to stop)", flush=True)
        try:
            server.wait()
        except KeyboardInterrupt:
            print("Stopped.")
