"""``st_oblique.export(model, folder, format=..., quantize=...)``: a whole oblique model as ONNX / OpenVINO graphs."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from st_oblique.errors import ExportError, MissingExtraError, ObliqueInputError
from st_oblique.export.calibration import PROBE_TEXTS, Calibration, probe_images, resolve_calibration
from st_oblique.export.graphs import DEFAULT_OPSET, graph_inputs, graph_metadata, onnx_to_openvino, trace_to_onnx
from st_oblique.export.input_specs import input_module_for, input_spec
from st_oblique.export.quantization import QUANTIZATIONS, VARIANT, quantize_onnx_dynamic, quantize_openvino_static
from st_oblique.model.card import ObliqueModelCardData
from st_oblique.model.description import describe_model
from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer
from st_oblique.modules.exported_oblique_encoder import ExportedObliqueEncoder
from st_oblique.modules.graph_runtimes import BACKENDS, EXPORT_EXTRA_INSTALL, import_backend
from st_oblique.modules.shape import oblique_poolings, oblique_shape
from st_oblique.output_folder import staged_output_dir

__all__ = ["EXPORTABLE_MODALITIES", "export_model", "graph_file"]

logger = logging.getLogger(__name__)

EXPORTABLE_MODALITIES = ("text", "image")
PROBE_CALIBRATION_ITEMS = 16
"""How many calibration inputs per modality join the probe inputs every variant is checked on."""
VERIFY_BATCH_SIZE = 5
_FLOAT = "fp32"


def graph_file(backend: str, modality: str, variant: str) -> str:
    """The relative path of a graph: ``onnx/model_text.onnx``, ``onnx/model_text_qint8.onnx``,
    ``openvino/openvino_model_image.xml``, ... (Sentence Transformers' folders and names, one file per modality)."""
    suffix = "" if variant == _FLOAT else f"_{variant}"
    if backend == "onnx":
        return f"onnx/model_{modality}{suffix}.onnx"
    return f"openvino/openvino_model_{modality}{suffix}.xml"


def export_model(
    model: Any,
    output_dir: str | Path,
    *,
    format: str | Sequence[str] = "onnx",  # the option's name in the issue, the command line and ST's docs
    quantize: str | None = None,
    calibration: Calibration | None = None,
    calibration_samples: int = 300,
    data_root: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = 1e-4,
    overwrite: bool = False,
    show_progress_bar: bool | None = None,
) -> Path:
    """Export a whole oblique model to ONNX and/or OpenVINO graphs in a model folder that Sentence Transformers loads
    with ``backend="onnx"`` / ``"openvino"``.

    One graph per modality (text, image) goes from the tensors of the tokenizer / image processor to the
    ``(B, K, d)`` oblique embeddings: class tokens, towers, hooks and the oblique head are inside, traced from the
    model's own torch forward pass (see :mod:`st_oblique.export`). The folder holds ``modules.json`` with one
    :class:`~st_oblique.modules.exported_oblique_encoder.ExportedObliqueEncoder`, its config, the graphs
    (``onnx/model_<modality>[_qint8].onnx``, ``openvino/openvino_model_<modality>[_qint8].xml``), the
    preprocessing files, the prompts and similarity function, and a model card.

    Before anything is written, every graph is run on probe inputs (texts of 1 to ~200 tokens, batches of 1 and
    more, images of several sizes, and some calibration inputs) and compared with the torch model: float32 graphs
    must agree to ``tolerance`` per coordinate, or the export fails; the int8 graphs' agreement is recorded in the
    folder's config (``verification``). The folder is staged and moved into place at the end: a failure leaves
    nothing behind.

    Args:
        model: an oblique SentenceTransformer, or the path / Hub id of one (loaded with :func:`st_oblique.load`).
        output_dir: the folder to write (must not exist or be empty, unless ``overwrite``).
        format: ``"onnx"``, ``"openvino"`` or both (a list).
        quantize: None (float32 graphs) or ``"int8"``: also an int8 variant of every graph, the folder's default
            (ONNX: ONNX Runtime's dynamic quantization, no calibration needed, but with calibration data the graph
            is first smoothed by SmoothQuant, which keeps a frozen tower's ranking quality; OpenVINO: static
            quantization by NNCF, calibrated on ``calibration``).
        calibration: texts and/or images (see :mod:`st_oblique.export.calibration`): a list, ``{"text": [...],
            "image": [...]}``, a text file, a folder of images or a dataset name. Required for OpenVINO int8 (for
            each modality); for ONNX int8 it turns on smoothing; a few join the probe inputs.
        calibration_samples: at most this many calibration inputs per modality (a fixed random subset).
        data_root: where named calibration datasets are (default ``$ST_OBLIQUE_DATA``).
        opset: the ONNX opset.
        tolerance: the largest difference per coordinate allowed between float32 graphs and the torch model.
        overwrite: replace an existing ``output_dir``.
        show_progress_bar: show the steps (default: when logging at INFO or lower).

    Returns:
        The output folder.

    Raises:
        ObliqueInputError: the model is not oblique, has an input module st-oblique cannot reproduce (named, with
            the supported ones), an unknown format or quantization, or OpenVINO int8 lacks calibration data.
        MissingExtraError: onnx, onnxruntime, onnxscript, openvino or nncf is missing (``pip install
            "st-oblique[export]"``).
        ExportError: a graph could not be traced or converted, or does not reproduce the torch model.
        OutputDirError: ``output_dir`` cannot be written.

    Example::

        import st_oblique

        model = st_oblique.load("runs/oblique-minilm")
        st_oblique.export(model, "oblique-minilm-onnx", format=["onnx", "openvino"], quantize="int8",
                          calibration="stsb_sentences.txt")
        fast = st_oblique.load("oblique-minilm-onnx", backend="onnx")                  # the int8 graphs
        exact = st_oblique.load("oblique-minilm-onnx", backend="openvino",
                                model_kwargs={"file_name": "openvino/openvino_model_text.xml"})  # float32
    """
    formats = _formats(format)
    if quantize not in (None, *QUANTIZATIONS):
        raise ObliqueInputError(f"quantize={quantize!r} is not supported; use None (float32) or one of {QUANTIZATIONS}.")
    _check_packages(formats, quantize)
    if isinstance(model, (str, Path)):
        from st_oblique.model.sentence_transformer import load

        model = load(str(model), device="cpu")
    shape = oblique_shape(model, required_by="st_oblique.export")
    modalities = _modalities(model)
    sources = {modality: input_module_for(model, modality) for modality in modalities}
    towers = {tower.modality: tower for tower in describe_model(model).towers}
    missing_towers = [modality for modality in modalities if modality not in towers]
    if missing_towers:
        raise ObliqueInputError(f"st_oblique.export cannot tell which head serves the {missing_towers} inputs of this model.")
    pooling = _pooling_config(model)
    calibration_inputs = resolve_calibration(calibration, max_samples=calibration_samples, data_root=data_root)
    variants = [_FLOAT] + ([VARIANT] if quantize else [])
    if quantize and "openvino" in formats:
        lacking = [modality for modality in modalities if not calibration_inputs.get(modality)]
        if lacking:
            raise ObliqueInputError(
                f"OpenVINO int8 is static quantization: it measures activation ranges on calibration data, and none "
                f"was given for the {' and '.join(lacking)} graph. Pass calibration= (st-oblique export --calibration) "
                "with texts and/or images: a list, a text file with one text per line, a folder of images, or a "
                "dataset name such as flickr8k_1k (with data_root). ONNX int8 (dynamic) needs none."
            )
    if quantize and "onnx" in formats:
        unsmoothed = [modality for modality in modalities if not calibration_inputs.get(modality)]
        if unsmoothed:
            logger.info(
                f"ONNX int8 of the {' and '.join(unsmoothed)} graph: plain dynamic quantization. With calibration data "
                "(calibration=, st-oblique export --calibration) the graph is smoothed first (SmoothQuant), which "
                "keeps a frozen pretrained tower's ranking quality (see st_oblique.export.smoothing)."
            )
    fixed_probes = {"text": list(PROBE_TEXTS), "image": probe_images(4)}
    probes = {
        modality: [*items, *calibration_inputs.get(modality, [])[:PROBE_CALIBRATION_ITEMS]]
        for modality, items in fixed_probes.items()
    }
    per_modality = 1 + ("onnx" in formats and bool(quantize)) + ("openvino" in formats) * (1 + bool(quantize))
    steps = len(modalities) * per_modality + len(formats) * len(variants) + 1
    show = logger.isEnabledFor(logging.INFO) if show_progress_bar is None else show_progress_bar
    with _exportable(model), staged_output_dir(output_dir, overwrite=overwrite) as staging, tqdm(
        total=steps, desc="Exporting", disable=not show, unit="step"
    ) as progress:
        specs = {modality: input_spec(sources[modality], staging) for modality in modalities}
        graphs: dict[str, dict[str, dict[str, str]]] = {backend: {variant: {} for variant in variants} for backend in formats}
        int8_methods: dict[str, dict[str, Any]] = {modality: {} for modality in modalities}
        for modality in modalities:
            progress.set_postfix_str(f"{modality}: tracing")
            source_graph = staging / graph_file("onnx", modality, _FLOAT)
            token_source = towers[modality].token_source
            sample = model.preprocess(_trace_sample(probes[modality], modality))
            trace_to_onnx(
                model, modality, sample, source_graph, num_tokens=shape.num_tokens, token_dim=shape.token_dim,
                token_source=token_source, opset=opset,
            )
            progress.update()
            metadata = graph_metadata(modality, shape.num_tokens, shape.token_dim, token_source, opset, variant=VARIANT)
            calibration_batches = (
                _calibration_batches(model, modality, calibration_inputs[modality])
                if quantize and calibration_inputs.get(modality)
                else []
            )
            if "onnx" in formats:
                graphs["onnx"][_FLOAT][modality] = graph_file("onnx", modality, _FLOAT)
                if quantize:
                    progress.set_postfix_str(f"{modality}: ONNX int8" + (" (smoothing)" if calibration_batches else ""))
                    target = graph_file("onnx", modality, VARIANT)
                    smoothing = quantize_onnx_dynamic(
                        source_graph, staging / target, metadata, calibration_batches,
                        # the calibration inputs are checked too (inside): only the fixed probes are added here
                        check_inputs=_calibration_batches(model, modality, fixed_probes[modality]) if calibration_batches else None,
                    )
                    int8_methods[modality]["onnx"] = {"method": "dynamic", "smoothing": smoothing}
                    graphs["onnx"][VARIANT][modality] = target
                    progress.update()
            if "openvino" in formats:
                progress.set_postfix_str(f"{modality}: OpenVINO")
                target = graph_file("openvino", modality, _FLOAT)
                onnx_to_openvino(source_graph, staging / target)
                graphs["openvino"][_FLOAT][modality] = target
                progress.update()
                if quantize:
                    progress.set_postfix_str(f"{modality}: OpenVINO int8 (calibrating)")
                    quantized = graph_file("openvino", modality, VARIANT)
                    quantize_openvino_static(
                        staging / target, staging / quantized, calibration_batches, metadata,
                        transformer=_has_attention(_tower(sources[modality].module, modality)),
                    )
                    int8_methods[modality]["openvino"] = {
                        "method": "static (NNCF)", "calibration_inputs": len(calibration_batches)
                    }
                    graphs["openvino"][VARIANT][modality] = quantized
                    progress.update()
            if "onnx" not in formats:
                source_graph.unlink()
                Path(str(source_graph) + ".data").unlink(missing_ok=True)
        if "onnx" not in formats:
            shutil.rmtree(staging / "onnx", ignore_errors=True)
        config = {
            "num_tokens": shape.num_tokens,
            "token_dim": shape.token_dim,
            "opset": opset,
            "modalities": {
                modality: {
                    "preprocessing": specs[modality],
                    "token_source": towers[modality].token_source,
                    "class_token_placement": towers[modality].class_token_placement,
                    "backbone": towers[modality].backbone,
                    **({"int8": int8_methods[modality]} if quantize else {}),
                }
                for modality in modalities
            },
            "graphs": graphs,
            "default_variant": variants[-1],
            "pooling": pooling,
        }
        verification = {}
        for backend in formats:
            for variant in variants:
                progress.set_postfix_str(f"checking {backend} {variant}")
                verification[f"{backend}/{variant}"] = _verify(
                    model, staging, config, backend, variant, probes, modalities, tolerance
                )
                progress.update()
        progress.set_postfix_str("saving")
        encoder = ExportedObliqueEncoder(staging, **config, verification=verification, backend=formats[0])
        exported = ObliqueSentenceTransformer(
            modules=[encoder],
            device="cpu",
            prompts=dict(model.prompts or {}),
            default_prompt_name=model.default_prompt_name,
            similarity_fn_name=model.similarity_fn_name,
            truncate_dim=model.truncate_dim,
            backend=formats[0],
            model_card_data=_card_data(model, formats),
        )
        exported.save(str(staging))
        progress.update()
    return Path(output_dir)


def _formats(format: str | Sequence[str]) -> list[str]:
    requested = [format] if isinstance(format, str) else list(format)
    unknown = [name for name in requested if name not in BACKENDS]
    if unknown or not requested:
        raise ObliqueInputError(
            f"format={format!r} is not supported; st-oblique exports to {' and '.join(BACKENDS)} (one or both)."
        )
    return [name for name in BACKENDS if name in requested]


def _check_packages(formats: list[str], quantize: str | None) -> None:
    """Fail before any work when a package the export needs is missing (the tracing always needs the ONNX ones)."""
    import_backend("onnx", "export oblique models")
    try:
        import onnxscript  # noqa: F401 (torch.onnx.export(dynamo=True) translates the graph with it)
    except ImportError as error:
        raise MissingExtraError(
            f"To export oblique models, st-oblique needs the package 'onnxscript', which is not installed: "
            f"{EXPORT_EXTRA_INSTALL}."
        ) from error
    if "openvino" in formats:
        import_backend("openvino", "export oblique models")
        if quantize:
            try:
                import nncf  # noqa: F401
            except ImportError as error:
                raise MissingExtraError(
                    f"OpenVINO int8 quantization needs the package 'nncf', which is not installed: {EXPORT_EXTRA_INSTALL}."
                ) from error


def _modalities(model: Any) -> list[str]:
    modalities = [str(modality) for modality in getattr(model, "modalities", ["text"])]
    other = [modality for modality in modalities if modality not in EXPORTABLE_MODALITIES]
    if other:
        raise ObliqueInputError(
            f"st_oblique.export exports text and image graphs; this model also takes {other} inputs. Supported "
            f"formats: {', '.join(BACKENDS)}."
        )
    return modalities


def _pooling_config(model: Any) -> dict[str, Any]:
    poolings = oblique_poolings(model)
    if len(poolings) != 1:
        raise ObliqueInputError(
            f"st_oblique.export exports models with one ObliquePooling (every builder makes one, with a head per "
            f"modality); this model has {len(poolings)}. Supported formats: {', '.join(BACKENDS)}."
        )
    config = poolings[0].get_config_dict()
    return {key: value for key, value in config.items() if key in type(poolings[0]).config_keys}


def _trace_sample(probes: list[Any], modality: str) -> list[Any]:
    """Example inputs for the trace: three texts of different lengths, or two images (never one: torch.export
    would treat a batch axis of size 1 as fixed)."""
    return list(probes[:3]) if modality == "text" else list(probes[:2])


@contextlib.contextmanager
def _exportable(model: Any) -> Iterator[None]:
    """The model on the CPU, in eval mode and float32 while it is traced and compared; put back afterwards."""
    dtypes = {parameter.dtype for parameter in model.parameters() if parameter.is_floating_point()}
    if dtypes - {torch.float32}:
        raise ObliqueInputError(
            f"st_oblique.export traces float32 models; this one has {sorted(str(dtype) for dtype in dtypes)} weights. "
            "Load it in float32 (model_kwargs={'dtype': torch.float32}); quantize=\"int8\" makes the small graphs."
        )
    device, training = model.device, model.training
    model.to("cpu")
    model.eval()
    try:
        yield
    finally:
        model.to(device)
        model.train(training)


def _calibration_batches(model: Any, modality: str, items: list[Any]) -> list[dict[str, Any]]:
    """The graph inputs of every calibration input (one example per batch, so no padding enters the statistics)."""
    batches = []
    for item in items:
        features = graph_inputs(model.preprocess([item]))
        batches.append({name: value.numpy() for name, value in features.items()})
    return batches


def _tower(module: torch.nn.Module, modality: str) -> torch.nn.Module:
    """The modules of ``modality``'s tower in an input module serving one or two towers (st-oblique's input modules
    name their towers' parts for locking them); the whole module otherwise."""
    parts = module._tower_parts() if hasattr(module, "_tower_parts") else {}
    return torch.nn.ModuleList(parts[modality][1]) if parts.get(modality, ((), ()))[1] else module


def _has_attention(tower: torch.nn.Module) -> bool:
    """Whether a tower has attention layers (a transformer, not a CNN): NNCF then quantizes it as one."""
    return any(
        isinstance(module, torch.nn.MultiheadAttention) or type(module).__name__.endswith("Attention")
        for module in tower.modules()
    )


def _verify(
    model: Any,
    folder: Path,
    config: dict[str, Any],
    backend: str,
    variant: str,
    probes: dict[str, list[Any]],
    modalities: list[str],
    tolerance: float,
) -> dict[str, Any]:
    """Run the ``backend`` ``variant`` graphs on the probe inputs through the exported model's own preprocessing and
    compare with the torch model; float32 must agree to ``tolerance``.

    Returns:
        ``{modality: {"inputs", "max_abs_diff", "mean_token_cosine", "min_token_cosine"}}``.

    Raises:
        ExportError: a float32 graph differs from the torch model by more than ``tolerance``.
    """
    file_name = next(iter(config["graphs"][backend][variant].values()))
    encoder = ExportedObliqueEncoder(folder, **config, backend=backend, model_kwargs={"file_name": file_name})
    report = {}
    for modality in modalities:
        items = probes[modality]
        exported = torch.cat([_run(encoder, batch) for batch in _batches(items)])
        reference = model.encode(items, batch_size=VERIFY_BATCH_SIZE, convert_to_tensor=True, show_progress_bar=False)
        reference = reference.reshape(exported.shape).float()
        difference = float((exported - reference).abs().max())
        cosines = torch.nn.functional.cosine_similarity(exported, reference, dim=-1)
        report[modality] = {
            "inputs": len(items),
            "max_abs_diff": difference,
            "mean_token_cosine": float(cosines.mean()),
            "min_token_cosine": float(cosines.min()),
        }
        if variant == _FLOAT and not difference <= tolerance:
            raise ExportError(
                f"The exported {backend} {modality} graph does not reproduce the torch model: its embeddings differ by "
                f"up to {difference:.2e} per coordinate on {len(items)} probe inputs (tolerance {tolerance:.0e}). "
                "Nothing was written. Report this with the model's architecture; `tolerance=` accepts a looser bound."
            )
    return report


def _batches(items: list[Any]) -> Iterator[list[Any]]:
    """Batches of 1, then up to :data:`VERIFY_BATCH_SIZE` (odd sizes), so both a single input and padding are checked."""
    yield items[:1]
    for start in range(1, len(items), VERIFY_BATCH_SIZE):
        yield items[start : start + VERIFY_BATCH_SIZE]


def _run(encoder: ExportedObliqueEncoder, batch: list[Any]) -> torch.Tensor:
    with torch.inference_mode():
        return encoder(encoder.preprocess(batch))["oblique_embeddings"]


def _card_data(model: Any, formats: list[str]) -> ObliqueModelCardData:
    """Card data of the exported model: the source model's names and base models, nothing of its training run."""
    source = model.model_card_data
    card = ObliqueModelCardData(
        language=source.language,
        license=source.license,
        model_name=source.model_name,
        tags=[tag for tag in (source.tags or []) if not tag.startswith("loss:")] + formats,
    )
    card.base_model = source.base_model
    return card
