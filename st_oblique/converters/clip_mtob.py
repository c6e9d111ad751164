"""Convert the paper's released checkpoints (github minogame/clip-mtob) into st-oblique model folders.

Sun, "Design of the topology for contrastive visual-textual alignment" (arXiv 2209.02127) released two ViT-B/16
CLIP models trained from scratch with the same data and schedule: ``vit-b16_mt-ob-32-16_e32_f32k_2.pt`` (the
oblique model, K=16 class tokens of d=32) and ``vit-b16_e32_f32k.pt`` (its sphere baseline, K=1, d=512). Each is a
plain ``state_dict`` of the official ``CLIP`` class. :func:`convert_clip_mtob` turns either into an ordinary
st-oblique model built from Hugging Face pieces, with no code of the official repository:

- image tower: ``CLIPVisionModel`` (pre-LN ViT, exact GELU) with the K class embeddings as st-oblique's class
  tokens (:class:`~st_oblique.modules.ExtraClassTokens`: the official class embedding k plus its position row k),
  preprocessed by torchvision exactly like the official evaluation (resize shortest side bicubic, center crop, CLIP
  mean/std; :class:`~st_oblique.modules.torchvision_image_class_token_transformer.TorchvisionImageClassTokenTransformer`);
- text tower: a ``BertModel`` (a bidirectional post-LN encoder: the official ``nn.TransformerEncoder`` with its
  ``ln_embedding``, dropout 0, exact GELU) with K−1 copies of ``[CLS]`` prepended
  (:class:`~st_oblique.modules.ClassTokenTransformer`), the official ``ln_final``
  (:class:`~st_oblique.modules.token_layer_norm.TokenLayerNorm`), and transformers' WordPiece tokenizer
  (``BertTokenizer``, lowercased, accents stripped) over the release's ``ERNIE-BASE-EN-2.0/vocab.txt``;
- head: :class:`~st_oblique.ObliquePooling` with the first K states of each tower, the official projections
  (``visual.proj``, ``text_projection``, one shared matrix per tower), per-token L2 normalization.

Every size is read from the checkpoint's tensor shapes (layers, widths, MLP widths, K, d, patch size, image size,
context length, vocabulary size); only the number of attention heads cannot be (an attention layer's weights have
the same shape for any head count): it is width // 64 for both towers, as the official code sets it for the
image tower and its release configuration (512 / 8) for the text tower; ``text_heads`` / ``vision_heads``
override it.

Example::

    from st_oblique.converters import convert_clip_mtob

    model = convert_clip_mtob("vit-b16_mt-ob-32-16_e32_f32k_2.pt", "clip-mtob/ERNIE-BASE-EN-2.0", "clip-mtob-oblique")
    model.encode(["a photo of a cat"]).shape        # (1, 512): 16 unit tokens of 32
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken
from torch import Tensor
from transformers import BertConfig, BertModel, BertTokenizer, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from st_oblique._compat import set_loaded_model_card, write_model_card_file
from st_oblique._version import __version__
from st_oblique.errors import ObliqueInputError, one_line
from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer
from st_oblique.modules.class_token_transformer import ClassTokenTransformer
from st_oblique.modules.modality_router import ModalityRouter
from st_oblique.modules.pooling import ObliquePooling
from st_oblique.modules.token_layer_norm import TokenLayerNorm
from st_oblique.modules.torchvision_image_class_token_transformer import TorchvisionImageClassTokenTransformer
from st_oblique.validators import check_positive_int

__all__ = ["SOURCE_FILE", "ClipMtobCheckpointError", "ClipMtobSource", "convert_clip_mtob", "read_clip_mtob_checkpoint"]

logger = logging.getLogger(__name__)

SOURCE_FILE = "clip_mtob_source.json"
"""File of a converted folder recording where it came from (:class:`ClipMtobSource`)."""

REPOSITORY = "https://github.com/minogame/clip-mtob"
PAPER = "https://arxiv.org/abs/2209.02127"
RELEASE_FILES = {
    "vit-b16_mt-ob-32-16_e32_f32k_2.pt": "the oblique model (MT-OB, K=16 tokens of d=32)",
    "vit-b16_e32_f32k.pt": "the sphere baseline (K=1, d=512), same data and schedule",
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LAYER_NORM_EPS = 1e-5  # torch's nn.LayerNorm default, used by every LayerNorm of the official code
HEAD_WIDTH = 64
SPECIAL_TOKENS = {
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "mask_token": "[MASK]",
}

_VISION_LAYER = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.")
_TEXT_LAYER = re.compile(r"^transformer\.encoder\.layers\.(\d+)\.")
_VISION_BLOCK_KEYS = (
    "attn.in_proj_weight",
    "attn.in_proj_bias",
    "attn.out_proj.weight",
    "attn.out_proj.bias",
    "ln_1.weight",
    "ln_1.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
)
_TEXT_BLOCK_KEYS = (
    "self_attn.in_proj_weight",
    "self_attn.in_proj_bias",
    "self_attn.out_proj.weight",
    "self_attn.out_proj.bias",
    "linear1.weight",
    "linear1.bias",
    "linear2.weight",
    "linear2.bias",
    "norm1.weight",
    "norm1.bias",
    "norm2.weight",
    "norm2.bias",
)
_TOP_KEYS = (
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.proj",
    "visual.conv1.weight",
    "visual.ln_pre.weight",
    "visual.ln_pre.bias",
    "visual.ln_post.weight",
    "visual.ln_post.bias",
    "positional_embedding",
    "text_projection",
    "token_embedding.weight",
    "ln_embedding.weight",
    "ln_embedding.bias",
    "ln_final.weight",
    "ln_final.bias",
)
_OPTIONAL_KEYS = ("logit_scale",)


class ClipMtobCheckpointError(ObliqueInputError):
    """A file that is not a checkpoint of the official clip-mtob ``CLIP`` (or a vocabulary that does not fit it)."""


@dataclass
class ClipMtobSource:
    """Where a converted model came from and the sizes read from its checkpoint (saved as ``clip_mtob_source.json``).

    Attributes:
        checkpoint: the checkpoint's file name.
        sha256: its SHA-256.
        size_bytes: its size.
        variant: ``"oblique"`` (K > 1) or ``"sphere"`` (K = 1).
        sizes: the architecture read from the tensor shapes (``num_class_tokens``, ``token_dim``, ``vision_*``,
            ``text_*``, ``image_size``, ``patch_size``, ``context_length``, ``vocab_size``).
        logit_scale: ``exp`` of the checkpoint's ``logit_scale`` parameter (None when absent). The official
            ``forward`` does not use it, so it is recorded here and not as the model's scale.
        vocab_sha256: SHA-256 of the ``vocab.txt`` used.
    """

    checkpoint: str
    sha256: str
    size_bytes: int
    variant: str
    sizes: dict[str, int]
    logit_scale: float | None
    vocab_sha256: str
    converter: str = field(default_factory=lambda: f"st-oblique {__version__} (st_oblique.converters.clip_mtob)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def convert_clip_mtob(
    checkpoint: str | os.PathLike,
    vocab: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    text_heads: int | None = None,
    vision_heads: int | None = None,
) -> ObliqueSentenceTransformer:
    """Turn an official clip-mtob checkpoint into an :class:`~st_oblique.ObliqueSentenceTransformer`.

    Args:
        checkpoint: the ``.pt`` file (a plain ``state_dict`` of the official ``CLIP``; a dict wrapping it under
            ``"state_dict"`` and ``module.`` prefixes are accepted too).
        vocab: the WordPiece vocabulary: the release's ``ERNIE-BASE-EN-2.0`` folder or its ``vocab.txt``.
        output: the folder to save the model to (with its card and ``clip_mtob_source.json``); None: not saved.
        text_heads: attention heads of the text tower (default: width // 64, 8 for the release).
        vision_heads: attention heads of the image tower (default: width // 64, as the official code sets it).

    Returns:
        The model (``similarity_fn_name="dot"``); ``model.clip_mtob_source`` is its :class:`ClipMtobSource`.

    Raises:
        ClipMtobCheckpointError: the file is not a clip-mtob checkpoint (the message lists what does not fit), or the
            vocabulary's size differs from the checkpoint's token embedding table.
        FileNotFoundError: a missing checkpoint or vocabulary.
    """
    checkpoint = Path(checkpoint)
    state, sizes = read_clip_mtob_checkpoint(checkpoint, text_heads=text_heads, vision_heads=vision_heads)
    vocab_file = _vocab_file(Path(vocab), sizes["vocab_size"])
    logit_scale = state.get("logit_scale")
    source = ClipMtobSource(
        checkpoint=checkpoint.name,
        sha256=_sha256(checkpoint),
        size_bytes=checkpoint.stat().st_size,
        variant="oblique" if sizes["num_class_tokens"] > 1 else "sphere",
        sizes=sizes,
        logit_scale=None if logit_scale is None else float(logit_scale.float().exp()),
        vocab_sha256=_sha256(vocab_file),
    )
    with tempfile.TemporaryDirectory(prefix="clip_mtob_") as staging:
        text_dir, image_dir = Path(staging, "text"), Path(staging, "image")
        _write_text_backbone(state, sizes, vocab_file, text_dir)
        _write_image_backbone(state, sizes, image_dir)
        model = _assemble(state, sizes, text_dir, image_dir)
    del state
    model.clip_mtob_source = source
    _describe(model, source)
    if output is not None:
        save_converted(model, output)
    return model


def save_converted(model: ObliqueSentenceTransformer, output: str | os.PathLike) -> None:
    """Save a model from :func:`convert_clip_mtob` with its card and ``clip_mtob_source.json``."""
    model.save(str(output))
    Path(output, SOURCE_FILE).write_text(
        json.dumps(model.clip_mtob_source.to_dict(), indent=2) + "\n", encoding="utf-8"
    )


def read_clip_mtob_checkpoint(
    checkpoint: str | os.PathLike, *, text_heads: int | None = None, vision_heads: int | None = None
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Load a clip-mtob checkpoint and read its architecture from the tensor shapes.

    Returns:
        ``(state_dict, sizes)``; the tensors are memory-mapped from the file when possible.

    Raises:
        ClipMtobCheckpointError: not a clip-mtob checkpoint (wrong keys or inconsistent shapes; the message says which).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"The clip-mtob checkpoint {path} does not exist.")
    state = _load_state_dict(path)
    sizes = _infer_sizes(path, state, text_heads=text_heads, vision_heads=vision_heads)
    return state, sizes


# ---- reading the checkpoint --------------------------------------------------------------------------------------


def _load_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not a zip-format file (legacy torch.save): no memory map, still weights only
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ClipMtobCheckpointError(
                f"{path} is not a PyTorch checkpoint of tensors: torch.load(weights_only=True) fails ({one_line(error, quoted=True)})"
            ) from error
    except Exception as error:
        raise ClipMtobCheckpointError(
            f"{path} is not a PyTorch checkpoint of tensors: torch.load(weights_only=True) fails ({one_line(error, quoted=True)})"
        ) from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(value, Tensor) for value in loaded.values()):
        raise ClipMtobCheckpointError(
            f"{path} does not hold a state_dict (a dict of tensors) but {type(loaded).__name__}; the clip-mtob release "
            "files are plain state_dicts of the official CLIP class."
        )
    if loaded and all(key.startswith("module.") for key in loaded):
        loaded = {key[len("module.") :]: value for key, value in loaded.items()}
    return loaded


def _infer_sizes(
    path: Path, state: dict[str, Tensor], *, text_heads: int | None, vision_heads: int | None
) -> dict[str, int]:
    def fail(problem: str) -> ClipMtobCheckpointError:
        return ClipMtobCheckpointError(
            f"{path} is not a checkpoint of the official clip-mtob CLIP ({REPOSITORY}): {problem}. Convert "
            "vit-b16_mt-ob-32-16_e32_f32k_2.pt or vit-b16_e32_f32k.pt, or another state_dict of that class."
        )

    missing_top = [key for key in _TOP_KEYS if key not in state]
    if missing_top:
        found = ", ".join(sorted(state)[:6]) + (", ..." if len(state) > 6 else "")
        raise fail(f"it lacks {missing_top[:6]}{' ...' if len(missing_top) > 6 else ''} (its keys: {found or 'none'})")
    vision_layers = _count_layers(state, _VISION_LAYER)
    text_layers = _count_layers(state, _TEXT_LAYER)
    if not vision_layers or not text_layers:
        raise fail("it has no visual.transformer.resblocks.N or no transformer.encoder.layers.N tensors")
    expected = set(_TOP_KEYS)
    expected |= {f"visual.transformer.resblocks.{i}.{key}" for i in range(vision_layers) for key in _VISION_BLOCK_KEYS}
    expected |= {f"transformer.encoder.layers.{i}.{key}" for i in range(text_layers) for key in _TEXT_BLOCK_KEYS}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected - set(_OPTIONAL_KEYS))
    if missing or unexpected:
        parts = [f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}"] if missing else []
        parts += [f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"] if unexpected else []
        raise fail("; ".join(parts))

    def shape(key: str) -> tuple[int, ...]:
        return tuple(state[key].shape)

    def check(condition: bool, problem: str) -> None:
        if not condition:
            raise fail(problem)

    class_embedding = shape("visual.class_embedding")
    check(len(class_embedding) == 2, f"visual.class_embedding has shape {class_embedding}, expected (K, width)")
    num_class_tokens, vision_width = class_embedding
    conv = shape("visual.conv1.weight")
    check(
        len(conv) == 4 and conv[:2] == (vision_width, 3) and conv[2] == conv[3],
        f"visual.conv1.weight has shape {conv}, expected ({vision_width}, 3, P, P)",
    )
    patch_size = conv[2]
    positions = shape("visual.positional_embedding")
    check(
        len(positions) == 2 and positions[1] == vision_width and positions[0] > num_class_tokens,
        f"visual.positional_embedding has shape {positions}, expected (patches + {num_class_tokens}, {vision_width})",
    )
    grid = math.isqrt(positions[0] - num_class_tokens)
    check(
        grid * grid == positions[0] - num_class_tokens,
        f"visual.positional_embedding has {positions[0]} rows: {positions[0] - num_class_tokens} patches after the "
        f"{num_class_tokens} class tokens is not a square grid",
    )
    proj = shape("visual.proj")
    check(len(proj) == 2 and proj[0] == vision_width, f"visual.proj has shape {proj}, expected ({vision_width}, d)")
    token_dim = proj[1]
    vision_mlp = shape("visual.transformer.resblocks.0.mlp.c_fc.weight")
    check(vision_mlp[1:] == (vision_width,), f"the image MLP has shape {vision_mlp}, expected (hidden, {vision_width})")

    vocab_size, text_width = shape("token_embedding.weight")
    text_positions = shape("positional_embedding")
    check(
        len(text_positions) == 2 and text_positions[1] == text_width,
        f"positional_embedding has shape {text_positions}, expected (context + K - 1, {text_width})",
    )
    context_length = text_positions[0] - (num_class_tokens - 1)
    check(context_length >= 2, f"positional_embedding has {text_positions[0]} rows, too few for K={num_class_tokens}")
    text_projection = shape("text_projection")
    check(
        text_projection == (text_width, token_dim),
        f"text_projection has shape {text_projection}, expected ({text_width}, {token_dim}) to match visual.proj",
    )
    text_mlp = shape("transformer.encoder.layers.0.linear1.weight")
    check(text_mlp[1:] == (text_width,), f"the text MLP has shape {text_mlp}, expected (hidden, {text_width})")
    for index in range(vision_layers):
        in_proj = shape(f"visual.transformer.resblocks.{index}.attn.in_proj_weight")
        check(in_proj == (3 * vision_width, vision_width), f"image layer {index} attention has shape {in_proj}")
    for index in range(text_layers):
        in_proj = shape(f"transformer.encoder.layers.{index}.self_attn.in_proj_weight")
        check(in_proj == (3 * text_width, text_width), f"text layer {index} attention has shape {in_proj}")

    sizes = {
        "num_class_tokens": num_class_tokens,
        "token_dim": token_dim,
        "image_size": grid * patch_size,
        "patch_size": patch_size,
        "vision_width": vision_width,
        "vision_layers": vision_layers,
        "vision_heads": _heads("vision", vision_width, vision_heads),
        "vision_mlp_width": vision_mlp[0],
        "text_width": text_width,
        "text_layers": text_layers,
        "text_heads": _heads("text", text_width, text_heads),
        "text_mlp_width": text_mlp[0],
        "context_length": context_length,
        "vocab_size": vocab_size,
    }
    return sizes


def _count_layers(state: dict[str, Tensor], pattern: re.Pattern) -> int:
    indices = {int(match.group(1)) for key in state if (match := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def _heads(tower: str, width: int, requested: int | None) -> int:
    heads = requested if requested is not None else max(1, width // HEAD_WIDTH)
    check_positive_int(heads, name=f"{tower}_heads")
    if width % heads:
        raise ValueError(f"{tower}_heads={heads} must divide the {tower} width {width}.")
    return heads


def _vocab_file(vocab: Path, vocab_size: int) -> Path:
    vocab_file = vocab / "vocab.txt" if vocab.is_dir() else vocab
    if not vocab_file.is_file():
        raise FileNotFoundError(
            f"No WordPiece vocabulary at {vocab_file}; pass the release's ERNIE-BASE-EN-2.0 folder or its vocab.txt."
        )
    with open(vocab_file, encoding="utf-8") as handle:
        tokens = [line.rstrip("\n").strip() for line in handle]
    if len(tokens) != vocab_size:
        raise ClipMtobCheckpointError(
            f"{vocab_file} has {len(tokens)} tokens but the checkpoint's token_embedding has {vocab_size} rows; use the "
            "vocabulary released with the checkpoint (ERNIE-BASE-EN-2.0/vocab.txt)."
        )
    absent = [token for token in SPECIAL_TOKENS.values() if token not in tokens]
    if absent:
        raise ClipMtobCheckpointError(f"{vocab_file} lacks the special tokens {absent} of a BERT WordPiece vocabulary.")
    return vocab_file


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- writing the Hugging Face backbones --------------------------------------------------------------------------


def _map_layer(
    state: dict[str, Tensor], weights: dict[str, Tensor], in_proj: str, qkv: list[str], renames: dict[str, str]
) -> None:
    """One transformer layer's tensors into ``weights``: torch's packed ``{in_proj}_weight``/``_bias`` split into the
    three ``qkv`` projections, and each ``renames`` module's weight and bias under its new name."""
    for name, weight, bias in zip(
        qkv, state[in_proj + "_weight"].chunk(3), state[in_proj + "_bias"].chunk(3), strict=True
    ):
        weights[f"{name}.weight"], weights[f"{name}.bias"] = weight, bias
    for official, hf in renames.items():
        for kind in ("weight", "bias"):
            weights[f"{hf}.{kind}"] = state[f"{official}.{kind}"]


def _write_backbone(model_class: type, config: Any, weights: dict[str, Tensor], folder: Path, *, anchor: str) -> None:
    """Save ``weights`` as ``model_class``'s checkpoint, after checking they are exactly its persistent tensors.

    ``weights`` are named relative to the tower (``embeddings.class_embedding``, ``encoder.layers.0...``); where the
    tower sits inside ``model_class`` is read from the model's own ``state_dict``, as the prefix of its ``anchor``
    tensor. It is a version detail of transformers: 5.0's ``CLIPVisionModel`` holds the tower as ``vision_model``
    (``vision_model.embeddings.class_embedding``), later 5.x versions (5.25) made ``CLIPVisionModel`` the tower itself
    (``embeddings.class_embedding``). The folder is loaded right away by the same transformers, so its own names fit.
    """
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in model_class(config).state_dict().items()}
    prefixes = [key.removesuffix(anchor) for key in expected if key == anchor or key.endswith("." + anchor)]
    if len(prefixes) != 1:
        raise RuntimeError(
            f"st-oblique's clip-mtob mapping does not fit transformers' {model_class.__name__}: it has "
            f"{len(prefixes)} tensors named like {anchor!r} ({prefixes[:3]}), expected one"
        )
    weights = {prefixes[0] + key: value for key, value in weights.items()}
    given = {key: tuple(value.shape) for key, value in weights.items()}
    if expected != given:
        wrong = sorted(set(expected) ^ set(given)) or sorted(key for key in given if given[key] != expected[key])
        raise RuntimeError(
            f"st-oblique's clip-mtob mapping does not fit transformers' {model_class.__name__}: {wrong[:5]}"
        )
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    save_file(
        {key: value.detach().float().contiguous() for key, value in weights.items()},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )


def _write_text_backbone(state: dict[str, Tensor], sizes: dict[str, int], vocab_file: Path, folder: Path) -> None:
    width = sizes["text_width"]
    config = BertConfig(
        vocab_size=sizes["vocab_size"],
        hidden_size=width,
        num_hidden_layers=sizes["text_layers"],
        num_attention_heads=sizes["text_heads"],
        intermediate_size=sizes["text_mlp_width"],
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=sizes["context_length"] + sizes["num_class_tokens"] - 1,
        type_vocab_size=1,
        layer_norm_eps=LAYER_NORM_EPS,
        pad_token_id=0,
    )
    weights = {
        "embeddings.word_embeddings.weight": state["token_embedding.weight"],
        "embeddings.position_embeddings.weight": state["positional_embedding"],
        "embeddings.token_type_embeddings.weight": torch.zeros(1, width),  # the official encoder has none
        "embeddings.LayerNorm.weight": state["ln_embedding.weight"],
        "embeddings.LayerNorm.bias": state["ln_embedding.bias"],
        "pooler.dense.weight": torch.zeros(width, width),  # BertModel's pooler; not used (the class tokens are)
        "pooler.dense.bias": torch.zeros(width),
    }
    for index in range(sizes["text_layers"]):
        source, target = f"transformer.encoder.layers.{index}.", f"encoder.layer.{index}."
        _map_layer(
            state, weights, source + "self_attn.in_proj", [f"{target}attention.self.{name}" for name in ("query", "key", "value")],
            {
                source + "self_attn.out_proj": target + "attention.output.dense",
                source + "norm1": target + "attention.output.LayerNorm",
                source + "linear1": target + "intermediate.dense",
                source + "linear2": target + "output.dense",
                source + "norm2": target + "output.LayerNorm",
            },
        )
    _write_backbone(BertModel, config, weights, folder, anchor="embeddings.word_embeddings.weight")
    # Special tokens count only as whole words, as in the official tokenizer (its `never_split`): "x[SEP]y" is text.
    specials = {
        name: AddedToken(token, single_word=True, special=True, normalized=False)
        for name, token in SPECIAL_TOKENS.items()
    }
    tokenizer = BertTokenizer(
        vocab=str(vocab_file),
        do_lower_case=True,
        tokenize_chinese_chars=True,
        strip_accents=None,
        model_max_length=sizes["context_length"],
        **specials,
    )
    tokenizer.save_pretrained(folder)


def _write_image_backbone(state: dict[str, Tensor], sizes: dict[str, int], folder: Path) -> None:
    k = sizes["num_class_tokens"]
    config = CLIPVisionConfig(
        hidden_size=sizes["vision_width"],
        intermediate_size=sizes["vision_mlp_width"],
        num_hidden_layers=sizes["vision_layers"],
        num_attention_heads=sizes["vision_heads"],
        num_channels=3,
        image_size=sizes["image_size"],
        patch_size=sizes["patch_size"],
        hidden_act="gelu",
        layer_norm_eps=LAYER_NORM_EPS,
        projection_dim=sizes["token_dim"],
    )
    positions = state["visual.positional_embedding"]
    weights = {
        # CLIP's own class token is the official token 0; tokens 1..K-1 become st-oblique's extra class tokens.
        "embeddings.class_embedding": state["visual.class_embedding"][0],
        "embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "embeddings.position_embedding.weight": torch.cat([positions[:1], positions[k:]]),
        "pre_layrnorm.weight": state["visual.ln_pre.weight"],
        "pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "post_layernorm.weight": state["visual.ln_post.weight"],
        "post_layernorm.bias": state["visual.ln_post.bias"],
    }
    for index in range(sizes["vision_layers"]):
        source, target = f"visual.transformer.resblocks.{index}.", f"encoder.layers.{index}."
        _map_layer(
            state, weights, source + "attn.in_proj", [f"{target}self_attn.{name}_proj" for name in "qkv"],
            {
                source + "attn.out_proj": target + "self_attn.out_proj",
                source + "ln_1": target + "layer_norm1",
                source + "ln_2": target + "layer_norm2",
                source + "mlp.c_fc": target + "mlp.fc1",
                source + "mlp.c_proj": target + "mlp.fc2",
            },
        )
    _write_backbone(CLIPVisionModel, config, weights, folder, anchor="embeddings.class_embedding")
    size = sizes["image_size"]
    CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": size},
        resample=3,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    ).save_pretrained(folder)


# ---- the st-oblique model ----------------------------------------------------------------------------------------


def _assemble(
    state: dict[str, Tensor], sizes: dict[str, int], text_dir: Path, image_dir: Path
) -> ObliqueSentenceTransformer:
    k = sizes["num_class_tokens"]
    text = ClassTokenTransformer(str(text_dir), num_class_tokens=k, max_seq_length=sizes["context_length"])
    image = TorchvisionImageClassTokenTransformer(str(image_dir), num_class_tokens=k)
    with torch.no_grad():
        if image.extra_class_tokens is not None:
            positions = state["visual.positional_embedding"]
            image.extra_class_tokens.tokens.copy_(state["visual.class_embedding"][1:] + positions[1:k])
        final_norm = TokenLayerNorm(sizes["text_width"], eps=LAYER_NORM_EPS)
        final_norm.norm.weight.copy_(state["ln_final.weight"])
        final_norm.norm.bias.copy_(state["ln_final.bias"])
        pooling = ObliquePooling(
            {"text": sizes["text_width"], "image": sizes["vision_width"]},
            num_tokens=k,
            token_dim=sizes["token_dim"],
            token_source="first",
            per_token_projection=False,
            layer_norm=False,
        )
        pooling.heads["text"].projection.copy_(state["text_projection"])
        pooling.heads["image"].projection.copy_(state["visual.proj"])
    router = ModalityRouter(text=[text, final_norm], image=[image])
    model = ObliqueSentenceTransformer(modules=[router, pooling], similarity_fn_name="dot", device="cpu")
    return model.eval()


def _describe(model: ObliqueSentenceTransformer, source: ClipMtobSource) -> None:
    """Card data and the card's "converted from" section (kept by ``model.save``)."""
    sizes = source.sizes
    k, d = sizes["num_class_tokens"], sizes["token_dim"]
    what = RELEASE_FILES.get(source.checkpoint, f"a clip-mtob checkpoint ({source.variant}, K={k}, d={d})")
    card_data = model.model_card_data
    card_data.model_name = f"clip-mtob {source.variant} ViT (K={k}, d={d}), converted from {source.checkpoint}"
    card_data.license = "mit"
    card_data.language = ["en"]
    card_data.add_tags(["clip-mtob", "clip", "image-text", "zero-shot-image-classification"])
    scale = "absent" if source.logit_scale is None else f"{source.logit_scale:.4g}"
    section = f"""### Converted from the paper's release

- **Paper:** Zhun Sun, *Design of the topology for contrastive visual-textual alignment* ([arXiv 2209.02127]({PAPER}))
- **Checkpoint:** `{source.checkpoint}`, {what}, from [{REPOSITORY.removeprefix("https://")}]({REPOSITORY}); SHA-256 `{source.sha256}` ({source.size_bytes:,} bytes)
- **Vocabulary:** `ERNIE-BASE-EN-2.0/vocab.txt` of the same repository (SHA-256 `{source.vocab_sha256}`), lowercased WordPiece
- **Licence:** MIT, the licence of the repository that distributes the checkpoint (its `LICENSE`); the training data has its own terms
- **Architecture read from the checkpoint:** image ViT {sizes["vision_layers"]} layers, width {sizes["vision_width"]}, {sizes["vision_heads"]} heads, patch {sizes["patch_size"]}, {sizes["image_size"]} px; text bidirectional post-LN encoder {sizes["text_layers"]} layers, width {sizes["text_width"]}, {sizes["text_heads"]} heads, {sizes["context_length"]} tokens plus {k - 1} extra `[CLS]` copies; K = {k}, d = {d}
- **Checkpoint `logit_scale`:** {scale} (not used by the official `forward`; the scores here are the raw sums of cosines, as there)
- **Preprocessing:** images resized (shortest side, bicubic) and center-cropped to {sizes["image_size"]} px with torchvision, CLIP mean/std, as the official evaluation; texts as the official `BertTokenizerWarper`
- **Converted by:** {source.converter}; `clip_mtob_source.json` in this folder holds these facts

"""
    with tempfile.TemporaryDirectory(prefix="clip_mtob_card_") as folder:
        write_model_card_file(model, folder)
        card = Path(folder, "README.md").read_text(encoding="utf-8")
    anchor = card.find("### Model Sources")
    card = card[:anchor] + section + card[anchor:] if anchor >= 0 else card.rstrip("\n") + "\n\n" + section
    set_loaded_model_card(model, card)
