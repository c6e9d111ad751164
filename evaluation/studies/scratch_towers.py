"""Regime C's models: tiny towers from scratch with K class tokens inside both transformers, built by st-oblique.

The towers are random Hugging Face models written to a folder and loaded by st-oblique's own builder
(:func:`st_oblique.oblique_dual_encoder`), so the study trains exactly the modules a user gets:

- text: a small bidirectional BERT (word-level tokenizer over the synthetic grammar's words) inside
  :class:`~st_oblique.modules.ClassTokenTransformer` (K class tokens at the front: ``[CLS]`` tiled K times, told
  apart by their position embeddings, as in the paper's official code);
- image: a small ViT (``CLIPVisionModel``) inside :class:`~st_oblique.modules.ImageClassTokenTransformer` (K−1
  extra class tokens inserted after its own);
- head: :class:`~st_oblique.ObliquePooling` reading the K class tokens (``token_source="first"``) — or, for the
  Sparo arm, :data:`st_oblique.builders.SPARO` applied to towers with one class token (K attention slots over the
  token states); for the ``class_attention`` arm, K class tokens that join after both towers (CaiT's class-attention
  blocks, ``token_source="class_attention"``, started from the random towers' last 2 layers); for the
  ``sphere_readout`` arm, Sparo's read-out with the sphere's geometry (:class:`SphereReadout`);
- loss: :class:`~st_oblique.ObliqueContrastiveLoss` (CLIP's symmetric InfoNCE when K=1).

From scratch, the K−1 extra image class tokens are drawn independently at random (the paper's K random class
embeddings) instead of :class:`~st_oblique.modules.vit_towers.ExtraClassTokens`' default, K copies of a
*pretrained* class token plus 2% noise, which for a random tower would start the K tokens almost equal.

Example::

    towers = TowerConfig(width=64, layers=2)
    folders = write_random_towers(tmp, towers, seed=0)          # text/ and image/ with random weights
    model, parts = build_model(arm, folders, towers, seed=0)     # an ObliqueSentenceTransformer and its modules
    loss = build_loss(model, arm)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evaluation.studies.lit_heads import spec_without_unset
from evaluation.studies.synthetic_scenes import vocabulary
from st_oblique import ObliqueContrastiveLoss, ObliquePooling, ObliqueSentenceTransformer, oblique_dual_encoder
from st_oblique.builders import SPARO
from st_oblique.modules import ClassTokenTransformer, ImageClassTokenTransformer
from st_oblique.modules.class_attention import CLASS_TOKEN_STD

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PIXEL_MEAN, PIXEL_STD = 0.5, 0.5


@dataclass(frozen=True)
class TowerConfig:
    """The size of both towers (the same for every arm; only K, d, the head and the temperature differ)."""

    width: int = 64
    layers: int = 2
    heads: int = 2
    mlp_ratio: int = 2
    image_size: int = 32
    patch_size: int = 8
    max_text_length: int = 40
    initializer_range: float = 0.02


HEADS = ("class_tokens", "sparo", "class_attention", "sphere_readout")
"""Regime C's heads: K class tokens inside both towers (the paper), Sparo's attention slots, K class tokens that join
after the towers (CaiT), and Sparo's read-out on the sphere (its K slots concatenated into one unit vector)."""


@dataclass(frozen=True)
class ScratchArm:
    """One regime-C arm: K, d, the head (one of :data:`HEADS`) and the scale.

    ``slots``: the attention slots of a ``"sphere_readout"`` arm (its ``num_tokens`` is 1: one unit vector of
    ``token_dim = slots * d`` floats).
    """

    name: str
    num_tokens: int
    token_dim: int
    head: str = "class_tokens"
    scale: float = 1.0
    learnable_scale: bool = False
    max_scale: float | None = None
    reduction: str = "sum"
    description: str = ""
    slots: int | None = None

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> ScratchArm:
        config = dict(config)
        unknown = set(config) - {f for f in cls.__dataclass_fields__ if f != "name"}
        if unknown:
            raise ValueError(f"regime_c arm {name!r}: unknown keys {sorted(unknown)}.")
        head = config.get("head", "class_tokens")
        if head in ("sparo", "sphere_readout"):
            # The preset's loss options (mean of the K cosines, CLIP's learnable temperature) unless overridden.
            config = {**SPARO.loss_options, **config}
        if head not in HEADS:
            raise ValueError(f"regime_c arm {name!r}: head must be one of {HEADS}, got {head!r}.")
        if (head == "sphere_readout") != (config.get("slots") is not None):
            raise ValueError(f"regime_c arm {name!r}: 'slots' is for (and required by) head 'sphere_readout'.")
        if head == "sphere_readout" and (config["num_tokens"] != 1 or config["token_dim"] % config["slots"]):
            raise ValueError(
                f"regime_c arm {name!r}: a sphere read-out has num_tokens 1 and token_dim a multiple of slots."
            )
        return cls(name=name, **config)

    def spec(self) -> dict[str, Any]:
        """The arm's part of a run specification (see :meth:`evaluation.studies.lit_heads.Arm.spec`)."""
        return spec_without_unset(self, ("slots",))

    @property
    def logit_range(self) -> float:
        """The largest logit (for a learnable scale: at its cap); the mean reduction divides the sum by K."""
        scale = self.max_scale if self.learnable_scale and self.max_scale else self.scale
        return scale * (1 if self.reduction == "mean" else self.num_tokens)


@dataclass
class ModelParts:
    """The modules of one model, for a training loop that feeds tensors directly (no PIL, no tokenizing per step)."""

    model: ObliqueSentenceTransformer
    text: ClassTokenTransformer
    image: ImageClassTokenTransformer
    pooling: ObliquePooling

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def encode_images(self, pixels: Tensor) -> Tensor:
        """``(B, 3, S, S)`` pixels in [0, 1] -> ``(B, K*d)`` embeddings."""
        features: dict[str, Any] = {"pixel_values": (pixels - PIXEL_MEAN) / PIXEL_STD, "modality": "image"}
        return self.pooling(self.image(features))["sentence_embedding"]

    def encode_texts(self, tokens: Mapping[str, Tensor]) -> Tensor:
        """Tokenized texts (rows of :func:`tokenize`) -> ``(B, K*d)`` embeddings."""
        length = int(tokens["attention_mask"].sum(1).max())
        features: dict[str, Any] = {key: value[:, :length] for key, value in tokens.items()}
        features["modality"] = "text"
        return self.pooling(self.text(features))["sentence_embedding"]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)


def arm_grid_and_seeds(config: dict[str, Any]) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Per regime-C arm, its learning-rate grid and its seeds: the ``headline_arms`` get their own (a wider grid, more
    seeds), the others the regime's ``lr_selection.grid`` and ``seeds``."""
    headline = config.get("headline_arms") or {}
    wide = set(headline.get("arms", []))
    unknown = sorted(wide - set(config["arms"]))
    if unknown:
        raise ValueError(f"regime_c.headline_arms names arms that are not in regime_c.arms: {unknown}.")
    grid = {name: list(headline.get("grid", config["lr_selection"]["grid"])) if name in wide
            else list(config["lr_selection"]["grid"]) for name in config["arms"]}
    seeds = {name: list(headline.get("seeds", config["seeds"])) if name in wide else list(config["seeds"])
             for name in config["arms"]}
    return grid, seeds


def write_random_towers(folder: str | Path, towers: TowerConfig, seed: int) -> dict[str, str]:
    """Random text (BERT + word-level tokenizer) and image (CLIP ViT + image processor) checkpoints in ``folder``."""
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizerFast,
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
    )

    folder = Path(folder)
    text_dir, image_dir = folder / "text", folder / "image"
    words = [*SPECIAL_TOKENS, *vocabulary()]
    tokenizer = BertTokenizerFast(vocab={word: index for index, word in enumerate(words)}, do_lower_case=True)
    tokenizer.model_max_length = towers.max_text_length
    torch.manual_seed(seed)
    text = BertModel(
        BertConfig(
            vocab_size=len(words),
            hidden_size=towers.width,
            num_hidden_layers=towers.layers,
            num_attention_heads=towers.heads,
            intermediate_size=towers.mlp_ratio * towers.width,
            max_position_embeddings=towers.max_text_length + 32,
            initializer_range=towers.initializer_range,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    )
    text.save_pretrained(text_dir)
    tokenizer.save_pretrained(text_dir)
    image = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=towers.width,
            intermediate_size=towers.mlp_ratio * towers.width,
            num_hidden_layers=towers.layers,
            num_attention_heads=towers.heads,
            image_size=towers.image_size,
            patch_size=towers.patch_size,
        )
    )
    image.save_pretrained(image_dir)
    CLIPImageProcessor(
        do_resize=False,
        do_center_crop=False,
        do_rescale=True,
        do_normalize=True,
        image_mean=[PIXEL_MEAN] * 3,
        image_std=[PIXEL_STD] * 3,
        do_convert_rgb=True,
    ).save_pretrained(image_dir)
    return {"text": str(text_dir), "image": str(image_dir)}


class SphereReadout(ObliquePooling):
    """Sparo's read-out with the sphere's geometry: the K attention slots of :data:`~st_oblique.builders.SPARO`, each
    projected to d, concatenated into one ``K*d`` vector that is normalized as a whole (not token by token).

    Concatenation rather than averaging: the network is exactly Sparo's (the same slots, the same K projections to
    d, the same ``K*d`` floats); only the normalization differs (one unit vector instead of K unit tokens), so the
    comparison with Sparo isolates the geometry. An average of the K slot vectors would instead shrink the embedding
    to d floats (or, with K projections to ``K*d``, be one linear map of the concatenation with more parameters).

    To the outside (losses, evaluation) it is a sphere: ``num_tokens`` 1 and ``token_dim`` ``K*d``; its heads keep
    the K slots.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots, self.slot_dim = self.num_tokens, self.token_dim
        self.num_tokens, self.token_dim = 1, self.slots * self.slot_dim

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        head = self.heads[features["modality"]]
        slots = head.token_projections(features["token_embeddings"], features.get("attention_mask"), None)
        flat = torch.nn.functional.normalize(slots.flatten(1), dim=-1)
        features["oblique_embeddings"] = flat.unsqueeze(1)
        features["sentence_embedding"] = flat
        return features


def sphere_readout(model: ObliqueSentenceTransformer, slots: int, slot_dim: int) -> ObliqueSentenceTransformer:
    """``model`` (towers with one class token each, K=slots attention heads) with its head replaced by a
    :class:`SphereReadout` of Sparo's settings (single-head slots, per-slot projections, no LayerNorm)."""
    backbone, pooling = list(model.children())
    head = SphereReadout(
        pooling.in_features,
        num_tokens=slots,
        token_dim=slot_dim,
        token_source="attention",
        per_token_projection=SPARO.per_token_projection,
        layer_norm=SPARO.layer_norm,
        num_attention_heads=SPARO.num_attention_heads,
    )
    return ObliqueSentenceTransformer(modules=[backbone, head], device="cpu", similarity_fn_name="dot")


def build_model(arm: ScratchArm, folders: Mapping[str, str], seed: int) -> ModelParts:
    """The arm's model from the random towers in ``folders`` (the same tower weights for every arm of a seed)."""
    torch.manual_seed(seed)
    # Sparo reads its slots with attention queries, late class tokens join after the towers; the paper's arms read
    # the K class tokens inside the towers
    source = {"sparo": "attention", "sphere_readout": "attention", "class_attention": "class_attention"}.get(
        arm.head, "first"
    )
    readout = arm.head == "sphere_readout"
    model = oblique_dual_encoder(
        folders["text"],
        folders["image"],
        num_tokens=arm.slots if readout else arm.num_tokens,
        token_dim=arm.token_dim // arm.slots if readout else arm.token_dim,
        text_token_source=source,
        image_token_source=source,
        local_files_only=True,
    )
    if arm.head == "sparo":
        model = SPARO.apply(model)
    if arm.head == "sphere_readout":
        model = sphere_readout(model, arm.slots, arm.token_dim // arm.slots)
    model.to("cpu")
    text = next(m for m in model.modules() if type(m) is ClassTokenTransformer)
    image = next(m for m in model.modules() if isinstance(m, ImageClassTokenTransformer))
    pooling = next(m for m in model.modules() if isinstance(m, ObliquePooling))
    generator = torch.Generator().manual_seed(seed + 7919)
    for head in pooling.heads.values():
        if head.token_source == "class_attention":
            # from scratch there is no pretrained class token worth copying: K independent random class tokens
            with torch.no_grad():
                head.class_attention.class_tokens.normal_(0.0, CLASS_TOKEN_STD, generator=generator)
    if image.extra_class_tokens is not None:
        with torch.no_grad():
            tokens = image.extra_class_tokens.tokens
            spread = float(tokens.std()) if tokens.numel() > 1 else 1.0
            scale = max(float(tokens.mean(0).std()), spread, 1e-3)
            tokens.copy_(torch.randn(tokens.shape, generator=generator) * scale)
    return ModelParts(model=model, text=text, image=image, pooling=pooling)


def build_loss(model: ObliqueSentenceTransformer, arm: ScratchArm) -> ObliqueContrastiveLoss:
    """The arm's loss: st-oblique's ObliqueContrastiveLoss with the arm's scale, cap and reduction."""
    return ObliqueContrastiveLoss(
        model,
        scale=arm.scale,
        learnable_scale=arm.learnable_scale,
        max_scale=arm.max_scale if arm.learnable_scale else None,
        reduction=arm.reduction,
    )


def tokenize(text_tower: ClassTokenTransformer, texts: list[str]) -> dict[str, Tensor]:
    """All ``texts`` through the tower's own preprocessing (K−1 class tokens prepended), padded to one length."""
    features = text_tower.preprocess(texts)
    return {key: value for key, value in features.items() if isinstance(value, Tensor) and value.ndim == 2}


def pixels(images: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).float()


__all__ = [
    "HEADS",
    "ModelParts",
    "ScratchArm",
    "SphereReadout",
    "TowerConfig",
    "arm_grid_and_seeds",
    "build_loss",
    "build_model",
    "pixels",
    "sphere_readout",
    "tokenize",
    "write_random_towers",
]
