"""The preprocessing of an exported oblique model: texts and images to the tensors its graphs take.

An exported graph starts where the torch model's forward pass starts, at the tensors of the input module's
``preprocess`` (token ids, attention masks, pixel values). The tokenizer, the image transform and the class-token
layout of the ids (K−1 copies of ``[CLS]`` in front, or K−1 end tokens after a causal caption) stay outside the
graph, as in Sentence Transformers' own ONNX/OpenVINO backends; they are saved next to the graphs and reproduced
here with the same library code the torch modules use (``prepend_class_tokens``, ``append_class_positions``,
open_clip's tokenizer and transform, torchvision's evaluation transform). :func:`st_oblique.export` checks that
the exported model's embeddings equal the torch model's on probe inputs before it writes anything.

Specs (``oblique_export_config.json``, ``modalities.<modality>.preprocessing``):

=========== ============= =====================================================================================
modality    ``kind``      what it runs
=========== ============= =====================================================================================
text        ``hf``        a Hugging Face tokenizer (``text_preprocessing/``) asked for exactly the tensors the
                          text graph takes (:func:`tokenizer_input_names`), right padding, ``max_length``; then
                          ``class_positions``: ``"prepend"`` (K−1 copies of the first token, bidirectional
                          encoders), ``"after_eos"`` (K−1 end tokens after the caption, causal CLIP) or ``"none"``
text        ``open_clip`` open_clip's tokenizer (``text_preprocessing/open_clip_config.json``, read by
                          ``open_clip.get_tokenizer("local-dir:...")``) and K−1 EOT copies after the EOT
image       ``hf``        a Hugging Face image processor (``image_preprocessing/preprocessor_config.json``)
image       ``torchvision`` torchvision's Resize/CenterCrop/Normalize built from that processor config
image       ``open_clip`` open_clip's evaluation transform from the saved ``preprocess_cfg``
=========== ============= =====================================================================================
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from st_oblique.data.images import load_images
from st_oblique.errors import ObliqueLoadError

__all__ = [
    "IMAGE_KINDS",
    "PREPROCESSING_FOLDERS",
    "TEXT_KINDS",
    "TOKENIZER_INPUTS",
    "ExportedImageInputs",
    "ExportedTextInputs",
    "save_image_processor",
    "tokenizer_input_names",
]

TEXT_KINDS = ("hf", "open_clip")
IMAGE_KINDS = ("hf", "torchvision", "open_clip")
PREPROCESSING_FOLDERS = {"text": "text_preprocessing", "image": "image_preprocessing"}
"""The folder of each modality's tokenizer / image processor files, inside the exported model folder."""
CLASS_POSITIONS = ("none", "prepend", "after_eos")
TOKENIZER_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
"""The tensors a Hugging Face tokenizer makes for single texts, in its order (``input_ids`` first: its main input)."""
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"


class ExportedTextInputs:
    """Texts -> the input tensors of an exported text graph, as the torch model's input module made them.

    Args:
        folder: the exported model folder.
        spec: the text preprocessing spec (see the module docstring): ``kind``, ``max_length`` and, for ``hf``,
            ``class_positions``, ``num_class_tokens``, ``eos_token_id``, ``position_limit`` (the longest text the
            position table leaves room for beside the class positions); for ``open_clip``, ``num_class_tokens``,
            ``pool_type``, ``eos_id``, ``causal``.
        input_names: the inputs of the text graph (``GraphInfo.input_names``); an ``hf`` tokenizer is asked for
            exactly these (:func:`tokenizer_input_names`). None keeps the tokenizer's own ``model_input_names``.

    Raises:
        ObliqueLoadError: the saved tokenizer cannot be loaded, or the graph takes an input no tokenizer makes.
    """

    def __init__(self, folder: str | Path, spec: dict[str, Any], input_names: Sequence[str] | None = None) -> None:
        self.spec = dict(spec)
        self.kind = _check_kind("text", spec, TEXT_KINDS)
        self.max_length = int(spec["max_length"])
        path = Path(folder) / PREPROCESSING_FOLDERS["text"]
        if self.kind == "hf":
            from transformers import AutoTokenizer

            positions = spec.get("class_positions", "none")
            if positions not in CLASS_POSITIONS:
                raise ObliqueLoadError(f"Unknown class_positions {positions!r} in the export config; expected one of {CLASS_POSITIONS}.")
            options = {} if input_names is None else {"model_input_names": tokenizer_input_names(input_names)}
            self.tokenizer = _load(lambda: AutoTokenizer.from_pretrained(str(path), **options), path, "tokenizer")
            self.tokenizer.padding_side = "right"  # the class positions sit at the front or right after the text
        else:
            import open_clip

            self.tokenizer = _load(lambda: open_clip.get_tokenizer(f"local-dir:{path}"), path, "open_clip tokenizer")

    def __call__(self, texts: list[str], prompt: str | None = None, max_length: int | None = None) -> dict[str, Any]:
        """``{"input_ids", "attention_mask"[, "token_type_ids"], "modality": "text"}``, ``(B, L)`` each.

        ``max_length`` (e.g. a trainer's) lowers the text budget; the K−1 class positions come on top as in torch.
        """
        if any(not isinstance(text, str) for text in texts):
            raise ValueError("Exported oblique models encode single texts; text pairs are not supported.")
        if prompt:
            texts = [prompt + text for text in texts]
        spec = self.spec
        budget = self.max_length if max_length is None else self._requested_budget(int(max_length))
        if self.kind == "open_clip":
            from st_oblique.modules.open_clip_encoder import open_clip_text_features

            return open_clip_text_features(
                self.tokenizer, texts, budget, num_class_tokens=int(spec["num_class_tokens"]),
                pool_type=spec["pool_type"], eos_id=spec.get("eos_id"), causal=bool(spec["causal"]),
            )
        features = dict(
            self.tokenizer(texts, padding=True, truncation="longest_first", max_length=budget, return_tensors="pt")
        )
        extra = int(spec.get("num_class_tokens", 1)) - 1
        positions = spec.get("class_positions", "none")
        if extra and positions == "prepend":
            from st_oblique.modules.class_token_transformer import prepend_class_tokens

            features = prepend_class_tokens(features, extra)
        elif extra and positions == "after_eos":
            from st_oblique.modules.clip_class_token_transformer import append_class_positions

            features = append_class_positions(features, extra, spec.get("eos_token_id"))
        features["modality"] = "text"
        return features

    def _requested_budget(self, max_length: int) -> int:
        """The text budget for a caller's ``max_length``, as the torch input module computes it."""
        if self.kind == "open_clip":
            return min(self.max_length, max_length)
        limit = self.spec.get("position_limit")
        return max_length if limit is None else min(max_length, int(limit))


class ExportedImageInputs:
    """Images -> ``{"pixel_values": (B, 3, H, W), "modality": "image"}`` for an exported image graph.

    Images may be PIL images of any mode (converted to RGB), paths, URLs or ``{"image": ...}`` dicts, as for the torch
    model.

    Args:
        folder: the exported model folder.
        spec: the image preprocessing spec: ``kind`` and, for ``open_clip``, ``preprocess_cfg``.
    """

    def __init__(self, folder: str | Path, spec: dict[str, Any]) -> None:
        self.spec = dict(spec)
        self.kind = _check_kind("image", spec, IMAGE_KINDS)
        path = Path(folder) / PREPROCESSING_FOLDERS["image"]
        if self.kind == "open_clip":
            from open_clip.transform import PreprocessCfg, image_transform_v2

            self.transform = image_transform_v2(PreprocessCfg(**spec["preprocess_cfg"]), is_train=False)
            self.processor = None
            return
        self.processor = _load(lambda: load_image_processor(path), path, "image processor")
        if self.kind == "torchvision":
            from st_oblique.modules.torchvision_image_class_token_transformer import torchvision_eval_transform

            self.transform = torchvision_eval_transform(self.processor)
        else:
            self.transform = None

    def __call__(self, images: list[Any]) -> dict[str, Any]:
        loaded = load_images(images)
        if self.transform is not None:
            pixel_values = torch.stack([self.transform(image) for image in loaded])
        else:
            pixel_values = self.processor(loaded, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "modality": "image"}


def tokenizer_input_names(graph_input_names: Sequence[str]) -> list[str]:
    """The ``model_input_names`` to load an exported model's tokenizer with, so that it makes the inputs its text
    graph was traced with: ``input_ids`` and ``attention_mask`` always (the class-token layout reads the mask; an
    input the graph does not take is never fed to it), ``token_type_ids`` exactly when the graph takes them.

    Why they are not left to the tokenizer: the graph's inputs are fixed when it is traced, from the tokenizer of the
    torch model, while the tokenizer class ``AutoTokenizer`` rebuilds from the saved files (and with it the default
    ``model_input_names``) depends on the transformers version and, in transformers 5.0, on the folder's name (with
    no ``config.json`` beside it, a path containing ``vit`` loads a BERT tokenizer as the generic
    ``TokenizersBackend``, which makes no ``token_type_ids``).

    Args:
        graph_input_names: the text graph's inputs, e.g. ``["input_ids", "token_type_ids", "attention_mask"]``.

    Raises:
        ObliqueLoadError: the graph takes an input a tokenizer does not make (named).
    """
    unknown = [name for name in graph_input_names if name not in TOKENIZER_INPUTS]
    if unknown:
        raise ObliqueLoadError(
            f"The exported text graph takes {list(graph_input_names)}, but a Hugging Face tokenizer makes only "
            f"{list(TOKENIZER_INPUTS)}: nothing can make {unknown}. The graph does not belong to this text "
            "preprocessing; export the model again."
        )
    return [name for name in TOKENIZER_INPUTS if name != "token_type_ids" or name in graph_input_names]


def save_image_processor(processor: Any, folder: str | Path) -> None:
    """Write a Hugging Face image processor's settings to ``folder/image_preprocessing/preprocessor_config.json``
    (``save_pretrained`` is disabled for some, e.g. timm's)."""
    path = Path(folder) / PREPROCESSING_FOLDERS["image"]
    path.mkdir(parents=True, exist_ok=True)
    processor.to_json_file(str(path / IMAGE_PROCESSOR_FILE))


def load_image_processor(path: Path) -> Any:
    """The image processor saved by :func:`save_image_processor`."""
    from transformers import AutoImageProcessor

    with open(path / IMAGE_PROCESSOR_FILE, encoding="utf-8") as handle:
        settings = json.load(handle)
    if settings.get("image_processor_type") == "TimmWrapperImageProcessor":
        # Rebuilt from its data config: transformers reads a timm processor from the model's config.json otherwise.
        from transformers import TimmWrapperImageProcessor

        return TimmWrapperImageProcessor(pretrained_cfg=settings["data_config"], architecture=settings.get("architecture"))
    return AutoImageProcessor.from_pretrained(str(path))


def _check_kind(modality: str, spec: dict[str, Any], kinds: tuple[str, ...]) -> str:
    kind = spec.get("kind")
    if kind not in kinds:
        raise ObliqueLoadError(
            f"Unknown {modality} preprocessing {kind!r} in the export config (known: {', '.join(kinds)}). It was "
            'probably written by a newer st-oblique: pip install -U "st-oblique[export]".'
        )
    return kind


def _load(build: Any, path: Path, what: str) -> Any:
    try:
        return build()
    except (OSError, ValueError, KeyError) as error:
        raise ObliqueLoadError(
            f"Cannot load the {what} of the exported model from {path} ({error}). The folder is incomplete; export the "
            "model again."
        ) from error
