"""What an exported model needs to reproduce the torch model's preprocessing, read from its input modules.

For each modality, :func:`input_spec` finds the input module that serves it (the model's first module, or the
modality's route of a :class:`~st_oblique.modules.ModalityRouter`), writes its tokenizer / image processor files into
the export folder and returns the spec :mod:`st_oblique.modules.exported_inputs` runs. Supported input modules:
:data:`SUPPORTED_INPUT_MODULES`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentence_transformers.base.modules import Router, Transformer
from torch import nn

from st_oblique.errors import ObliqueInputError
from st_oblique.modules.class_token_transformer import ClassTokenTransformer
from st_oblique.modules.exported_inputs import PREPROCESSING_FOLDERS, save_image_processor
from st_oblique.modules.graph_runtimes import BACKENDS
from st_oblique.modules.modality_router import ModalityRouter

__all__ = ["SUPPORTED_INPUT_MODULES", "ModalityInput", "input_module_for", "input_spec"]

SUPPORTED_INPUT_MODULES = (
    "ClassTokenTransformer (BERT-like text towers)",
    "CLIPClassTokenTransformer (Hugging Face CLIP)",
    "ImageClassTokenTransformer and TorchvisionImageClassTokenTransformer (timm / Hugging Face image towers)",
    "OpenCLIPEncoder (open_clip models)",
    "Sentence Transformers' Transformer",
)
"""The input modules whose preprocessing an exported model reproduces (alone, or as the routes of a
ModalityRouter); every module after them is traced as it runs."""


@dataclass(frozen=True)
class ModalityInput:
    """The input module serving one modality, and where it sits (for messages)."""

    modality: str
    module: nn.Module
    where: str


def input_module_for(model: nn.Module, modality: str) -> ModalityInput:
    """The input module that preprocesses ``modality`` inputs of ``model``.

    Raises:
        ObliqueInputError: the model routes by task (a plain ``Router``), which an exported model cannot reproduce.
    """
    first = next(iter(model.children()))
    if isinstance(first, ModalityRouter):
        return ModalityInput(modality, first.sub_modules[modality][0], f"the {modality} route of the ModalityRouter")
    if isinstance(first, Router):
        raise ObliqueInputError(
            "st_oblique.export exports models whose inputs are routed by modality (ModalityRouter) or served by one "
            "input module; this model's first module is a Router by task (query/document), whose routes an exported "
            f"model cannot choose. Supported formats: {', '.join(BACKENDS)}."
        )
    return ModalityInput(modality, first, "the model's first module")


def input_spec(source: ModalityInput, folder: Path) -> dict[str, Any]:
    """Write the preprocessing files of ``source`` into ``folder`` and return its preprocessing spec.

    Raises:
        ObliqueInputError: an input module (or an open_clip tokenizer) st-oblique cannot reproduce; the message
            names it and lists the supported ones.
    """
    from st_oblique.modules.open_clip_encoder import OpenCLIPEncoder  # open_clip is imported for open_clip models only

    module = source.module
    if isinstance(module, OpenCLIPEncoder):
        return _open_clip_spec(source, folder)
    if isinstance(module, Transformer):
        return _text_spec(module, folder) if source.modality == "text" else _image_spec(module, folder)
    raise unsupported(source, type(module).__name__)


def unsupported(source: ModalityInput, what: str) -> ObliqueInputError:
    return ObliqueInputError(
        f"st_oblique.export cannot export {what} ({source.where}, {source.modality} inputs): an exported model must "
        f"reproduce its preprocessing, and st-oblique knows how for {'; '.join(SUPPORTED_INPUT_MODULES)}. Supported "
        f"formats: {', '.join(BACKENDS)}. Keep this model on the torch backend."
    )


def _text_spec(module: Transformer, folder: Path) -> dict[str, Any]:
    from st_oblique.modules.clip_class_token_transformer import CLIPClassTokenTransformer

    tokenizer = module.tokenizer
    tokenizer.save_pretrained(str(folder / PREPROCESSING_FOLDERS["text"]))
    num_class_tokens = int(getattr(module, "num_class_tokens", 1))
    if isinstance(module, CLIPClassTokenTransformer):
        positions, eos_token_id = "after_eos", tokenizer.eos_token_id
    elif isinstance(module, ClassTokenTransformer):
        positions, eos_token_id = "prepend", None
    else:
        positions, eos_token_id = "none", None
    if num_class_tokens > 1:
        # what ClassTokenTransformer.preprocess asks the tokenizer for: the text budget that leaves room for K−1
        max_length = module._text_budget(None)
        position_limit = module.max_position_embeddings
        position_limit = None if position_limit is None else position_limit - (num_class_tokens - 1)
    else:
        max_length, position_limit = module.max_seq_length, None
    return {
        "kind": "hf",
        "max_length": int(max_length),
        "position_limit": position_limit,
        "class_positions": positions if num_class_tokens > 1 else "none",
        "num_class_tokens": num_class_tokens,
        "eos_token_id": eos_token_id,
    }


def _image_spec(module: Transformer, folder: Path) -> dict[str, Any]:
    from st_oblique.modules.torchvision_image_class_token_transformer import TorchvisionImageClassTokenTransformer

    processor = getattr(module.processor, "image_processor", module.processor)
    save_image_processor(processor, folder)
    kind = "torchvision" if isinstance(module, TorchvisionImageClassTokenTransformer) else "hf"
    return {"kind": kind}


def _open_clip_spec(source: ModalityInput, folder: Path) -> dict[str, Any]:
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    module = source.module
    if source.modality == "image":
        return {"kind": "open_clip", "preprocess_cfg": json.loads(json.dumps(module.preprocess_cfg))}
    path = folder / PREPROCESSING_FOLDERS["text"]
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = module.tokenizer
    text_cfg = dict(module.model_cfg.get("text_cfg") or {})
    if isinstance(tokenizer, HFTokenizer):
        tokenizer.tokenizer.save_pretrained(str(path))
        text_cfg["hf_tokenizer_name"] = text_cfg.get("hf_tokenizer_name") or "local"
    elif type(tokenizer) is SimpleTokenizer:
        text_cfg.pop("hf_tokenizer_name", None)
    else:
        raise unsupported(source, f"an OpenCLIPEncoder with open_clip's {type(tokenizer).__name__}")
    text_cfg["context_length"] = module.context_length
    # open_clip.get_tokenizer("local-dir:<path>") reads this file, so the tokenizer is open_clip's own
    with open(path / "open_clip_config.json", "w", encoding="utf-8") as handle:
        json.dump({"model_cfg": {"text_cfg": text_cfg}}, handle, indent=2)
    eos_id = getattr(module.model, "text_eos_id", None) or getattr(module.text_tower, "eos_id", None)
    return {
        "kind": "open_clip",
        "max_length": int(module.max_seq_length),
        "num_class_tokens": int(module.num_class_tokens),
        "pool_type": module._text_pool_type,
        "eos_id": None if eos_id is None else int(eos_id),
        "causal": module.text_tower.attn_mask is not None,
    }
