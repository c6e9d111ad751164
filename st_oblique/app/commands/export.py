"""``st-oblique export``: a saved oblique model as ONNX / OpenVINO graphs for fast CPU inference (float32 and int8).

Example::

    st-oblique export runs/oblique-minilm --format onnx openvino --quantize int8 \\
        --calibration stsb_sentences.txt --output oblique-minilm-cpu
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from st_oblique.app.model_location import check_model_location
from st_oblique.app.options import positive_int
from st_oblique.errors import ObliqueConfigError

NAME = "export"
HELP = "export a saved oblique model to ONNX / OpenVINO graphs (float32, int8) for fast CPU inference"
DESCRIPTION = (
    "Export the whole oblique model (class tokens, towers and oblique head, one graph per modality) to ONNX and/or "
    "OpenVINO, optionally with int8 variants (ONNX Runtime dynamic quantization, smoothed first (SmoothQuant) when "
    "--calibration is given; OpenVINO static quantization calibrated on --calibration). The output folder loads with st_oblique.load(OUT, backend='onnx'|'openvino') "
    "or SentenceTransformer(OUT, backend=..., trust_remote_code=True). Every graph is checked against the torch "
    "model before anything is written."
)
FORMATS = ("onnx", "openvino")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved oblique model folder or Hub id")
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=["onnx"], help="one or both (default: onnx)")
    parser.add_argument("--quantize", choices=["int8"], help="also write int8 graphs (then the folder's default)")
    parser.add_argument(
        "--calibration", metavar="FILE|FOLDER|DATASET",
        help="calibration inputs (required for OpenVINO int8; for ONNX int8 they turn on SmoothQuant): a text file (one text per line), a folder of images, "
        "or a dataset name (e.g. flickr8k_1k, read from --data-root)",
    )
    parser.add_argument("--calibration-samples", type=positive_int, default=300,
                        help="at most this many calibration inputs per modality (default: 300)")
    parser.add_argument("--data-root", help="the folder holding named datasets (default: $ST_OBLIQUE_DATA)")
    parser.add_argument("--opset", type=positive_int, default=20, help="ONNX opset (default: 20)")
    parser.add_argument("--output", help="the folder to write (must not exist or be empty); required")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> None:
    # torch and the exporters are imported when the command runs, so that `--help` answers at once
    from st_oblique.export import export_model
    from st_oblique.model.sentence_transformer import load

    if not args.output:
        raise ObliqueConfigError("st-oblique export needs --output (the folder to write).")
    check_model_location(args.model)
    started = time.perf_counter()
    model = load(args.model, device="cpu")
    folder = export_model(
        model, args.output, format=args.format, quantize=args.quantize, calibration=args.calibration,
        calibration_samples=args.calibration_samples, data_root=args.data_root, opset=args.opset,
        overwrite=args.overwrite, show_progress_bar=True,
    )
    config = json.loads((Path(folder) / "oblique_export_config.json").read_text(encoding="utf-8"))
    print(f"Exported {args.model} to {folder} in {time.perf_counter() - started:.1f} s.")
    for key, report in config["verification"].items():
        backend, variant = key.split("/")
        checks = "; ".join(
            f"{modality}: max |difference| {entry['max_abs_diff']:.1e}, mean token cosine {entry['mean_token_cosine']:.4f}"
            for modality, entry in report.items()
        )
        print(f"  {backend} {variant}: {', '.join(config['graphs'][backend][variant].values())} ({checks} vs torch)")
    print(
        f"Load it with st_oblique.load({str(folder)!r}, backend={args.format[0]!r}); the default variant is "
        f"{config['default_variant']} (model_kwargs={{'file_name': ...}} picks another)."
    )
