"""Image inputs and K class tokens for Vision Transformer image towers.

Three pieces, shared by every st-oblique module that encodes images:

- :func:`load_image` / :func:`load_images`: turn what users and MTEB pass (PIL images, file paths, URLs,
  ``{"image": ...}`` dicts, arrays) into RGB PIL images, with an error that names an unreadable file;
- :class:`ExtraClassTokens` and :func:`vit_tower`: K−1 learned class tokens inserted right after a ViT's own
  class token (HF CLIP, timm and open_clip ViTs), kept outside the backbone's weights so that the backbone
  checkpoint stays loadable by its own library;
- :class:`ImageClassTokenTransformer`: ST's ``Transformer`` for an image model (timm, HF) with those K class
  tokens, or, for a backbone without a class token (a CNN), its flattened feature map as tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_model
from sentence_transformers.base.modality import infer_batch_modality, raise_unsupported_modality_error
from sentence_transformers.base.modules import Transformer
from sentence_transformers.util import load_file_path
from torch import Tensor, nn

from st_oblique.modules.serialization import VERSION_KEY, ObliqueLoadError, describe_location, load_module_weights
from st_oblique.modules.text_class_tokens import ClassTokenTransformer

CLASS_TOKENS_FOLDER = "oblique_class_tokens"
"""Folder (inside a module's folder) holding the extra class tokens as ``model.safetensors``."""

CLASS_TOKEN_NOISE = 0.02
"""Std of the noise added to the copies of the class token, relative to the class token's own std."""


# ---------------------------------------------------------------------------------------------------------------
# Image inputs
# ---------------------------------------------------------------------------------------------------------------


def load_image(image: Any):
    """One image input as an RGB ``PIL.Image.Image``.

    Accepts a PIL image (any mode: grayscale, RGBA, palette ... are converted to RGB), a local file path
    (``str`` or ``os.PathLike``), an http(s) URL or ``data:image/`` URI, a ``{"image": ...}`` dict (as MTEB sends
    images), or a 3-D array/tensor (``HWC`` or ``CHW``; floats in [0, 1] or integers in [0, 255]).

    Raises:
        ValueError: the file cannot be read as an image (the message names the file), or the input is not an
            image at all.
    """
    from PIL import Image

    if isinstance(image, dict):
        if set(image) != {"image"}:
            raise ValueError(
                f"An image input given as a dict must be {{'image': ...}}, got the keys {sorted(image)}. "
                "Encode images and texts separately."
            )
        image = image["image"]
    if isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, (str, os.PathLike)):
        pil = _open_image_file(image)
    elif isinstance(image, (torch.Tensor, np.ndarray)):
        from transformers.image_transforms import to_pil_image

        if image.ndim != 3:
            raise ValueError(f"An image array must have 3 dimensions (HWC or CHW), got shape {tuple(image.shape)}.")
        pil = to_pil_image(image)
    else:
        raise ValueError(
            f"Cannot use a {type(image).__name__} as an image; pass a PIL image, an image file path or URL, "
            "a {'image': ...} dict or a 3-D array."
        )
    return pil if pil.mode == "RGB" else pil.convert("RGB")


def load_images(images: Sequence[Any]) -> list:
    """:func:`load_image` for every item of a batch."""
    return [load_image(image) for image in images]


def _open_image_file(location: str | os.PathLike):
    from PIL import Image, UnidentifiedImageError

    text = str(location)
    if text.startswith(("http://", "https://", "data:image/")):
        from transformers.image_utils import load_image as load_remote_image

        try:
            return load_remote_image(text)
        except Exception as error:  # network and decoding errors of every kind
            raise ValueError(f"Cannot load the image {text[:100]!r}: {error}") from error
    try:
        with Image.open(location) as handle:
            handle.load()
            return handle.copy()
    except FileNotFoundError as error:
        raise ValueError(f"The image file {text!r} does not exist.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"Cannot read the image file {text!r}: {error}. The file is damaged or not an image; "
            "replace or remove it."
        ) from error


def batch_modality(module_name: str, inputs: Sequence[Any], supported: list[str]) -> str:
    """The modality of a batch (``"text"``, ``"image"``), raising ST's own clear error for a batch that mixes
    modalities ("Encode each modality separately") or holds one ``module_name`` does not support."""
    modality = infer_batch_modality(inputs, supported_modalities=supported)
    if modality not in supported:
        raise_unsupported_modality_error(inputs, modality, supported, module_name)
    return modality


# ---------------------------------------------------------------------------------------------------------------
# Extra class tokens in Vision Transformers
# ---------------------------------------------------------------------------------------------------------------


class ExtraClassTokens(nn.Module):
    """K−1 learned class tokens that a ViT tower gets in addition to its own class token.

    They are inserted right after the class token, *after* the position embeddings were added, so each extra
    token is one learned vector (class embedding and position folded together). They are initialised to the
    pretrained class token plus its position embedding, plus small noise, so a pretrained model starts with K
    copies of its own class token. The backbone's weights are untouched: the tokens are saved in their own file
    (``oblique_class_tokens/model.safetensors``), and the backbone checkpoint still loads with its library.

    Args:
        num_extra: K − 1.
        width: the ViT's hidden size.
    """

    def __init__(self, num_extra: int, width: int) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.zeros(num_extra, width))

    @torch.no_grad()
    def initialize(self, class_token: Tensor) -> None:
        """Set every token to ``class_token`` (``(width,)``, position embedding included) plus small noise."""
        class_token = class_token.detach().float()
        noise = torch.randn_like(self.tokens) * CLASS_TOKEN_NOISE * class_token.std().clamp(min=1e-6)
        self.tokens.copy_(class_token.to(self.tokens.device) + noise)

    def insert(self, hidden: Tensor) -> Tensor:
        """``(B, 1 + N, H)`` -> ``(B, K + N, H)``: the extra tokens go right after position 0 (the class token)."""
        extra = self.tokens.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
        return torch.cat([hidden[:, :1], extra, hidden[:, 1:]], dim=1)

    def save(self, module_path: str) -> None:
        folder = os.path.join(module_path, CLASS_TOKENS_FOLDER)
        os.makedirs(folder, exist_ok=True)
        save_model(self, os.path.join(folder, "model.safetensors"))

    def load(self, model_name_or_path: str, **kwargs: Any) -> None:
        """Load the tokens saved by :meth:`save` (``kwargs``: hub arguments, incl. the module's ``subfolder``)."""
        subfolder = Path(kwargs.pop("subfolder", "") or "", CLASS_TOKENS_FOLDER).as_posix()
        load_module_weights(self, model_name_or_path, subfolder=subfolder, **kwargs)


@dataclass
class ViTTower:
    """A view of a model's ViT image tower that can run it with extra class tokens.

    Subclasses know one family's internals (HF CLIP, timm, open_clip). Built per call from the module that owns
    the model, so no parameter is captured in a closure (safe with ``DataParallel`` replicas).
    """

    module: nn.Module

    @property
    def width(self) -> int:
        raise NotImplementedError

    def class_token(self) -> Tensor:
        """The class token as the first layer sees it (class embedding + its position embedding), ``(width,)``."""
        raise NotImplementedError

    def token_states(self, pixel_values: Tensor, extra: ExtraClassTokens | None) -> Tensor:
        """Final token states ``(B, K + N, width)`` (after the tower's final LayerNorm); class tokens first."""
        raise NotImplementedError


class HFCLIPVisionTower(ViTTower):
    """transformers' CLIP vision tower (``CLIPModel.vision_model`` or a ``CLIPVisionModel``)."""

    @property
    def width(self) -> int:
        return self.module.config.hidden_size

    def class_token(self) -> Tensor:
        embeddings = self.module.embeddings
        return embeddings.class_embedding + embeddings.position_embedding.weight[0]

    def token_states(self, pixel_values: Tensor, extra: ExtraClassTokens | None) -> Tensor:
        tower = self.module
        hidden = tower.embeddings(pixel_values.to(tower.embeddings.patch_embedding.weight.dtype))
        if extra is not None:
            hidden = extra.insert(hidden)
        hidden = tower.pre_layrnorm(hidden)
        hidden = tower.encoder(inputs_embeds=hidden).last_hidden_state
        # CLIP applies post_layernorm to the pooled class token only; it is per-token, so apply it to all.
        return tower.post_layernorm(hidden)


class TimmViTTower(ViTTower):
    """A timm ``VisionTransformer`` with a class token (``TimmWrapperModel.timm_model``)."""

    @property
    def width(self) -> int:
        return self.module.embed_dim

    def class_token(self) -> Tensor:
        vit = self.module
        token = vit.cls_token[0, 0]
        if vit.pos_embed is not None and not vit.no_embed_class:
            token = token + vit.pos_embed[0, 0]
        return token

    def token_states(self, pixel_values: Tensor, extra: ExtraClassTokens | None) -> Tensor:
        vit = self.module
        hidden = vit._pos_embed(vit.patch_embed(pixel_values))
        # Patch dropout keeps the prefix tokens timm knows of; run it before the extra tokens exist.
        hidden = vit.patch_drop(hidden)
        if extra is not None:
            hidden = extra.insert(hidden)
        hidden = vit.norm_pre(hidden)
        if getattr(vit, "grad_checkpointing", False) and torch.is_grad_enabled():
            from timm.models import checkpoint_seq

            hidden = checkpoint_seq(vit.blocks, hidden)
        else:
            hidden = vit.blocks(hidden)
        return vit.norm(hidden)


class OpenCLIPViTTower(ViTTower):
    """open_clip's ``VisionTransformer`` with class-token pooling (``model.visual``)."""

    @property
    def width(self) -> int:
        return self.module.class_embedding.shape[-1]

    def class_token(self) -> Tensor:
        return self.module.class_embedding + self.module.positional_embedding[0]

    def token_states(self, pixel_values: Tensor, extra: ExtraClassTokens | None) -> Tensor:
        visual = self.module
        hidden = visual.conv1(pixel_values.to(visual.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        class_embedding = visual.class_embedding.to(hidden.dtype).expand(hidden.shape[0], 1, -1)
        hidden = torch.cat([class_embedding, hidden], dim=1) + visual.positional_embedding.to(hidden.dtype)
        hidden = visual.patch_dropout(hidden)  # keeps the first token; the extra tokens are inserted after it
        if extra is not None:
            hidden = extra.insert(hidden)
        hidden = visual.transformer(visual.ln_pre(hidden))
        # ln_post is per-token, so applying it before or after pooling (final_ln_after_pool) is the same.
        return visual.ln_post(hidden)


def vit_tower(model: nn.Module) -> ViTTower | None:
    """The :class:`ViTTower` of ``model`` (an HF CLIP/CLIPVision model, a ``TimmWrapperModel`` around a timm ViT
    with a class token, an open_clip model or its ``visual``), or None when its image tower cannot take extra
    class tokens (CNNs, ViTs without a class token or with attention pooling)."""
    tower = getattr(model, "vision_model", model)
    if type(tower).__name__ in ("CLIPVisionModel", "CLIPVisionTransformer"):
        return HFCLIPVisionTower(tower)

    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None:
        from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer

        if isinstance(timm_model, TimmVisionTransformer) and timm_model.cls_token is not None:
            return TimmViTTower(timm_model)
        return None

    visual = getattr(model, "visual", model)
    if type(visual).__module__.startswith("open_clip."):
        from open_clip.transformer import VisionTransformer as OpenCLIPVisionTransformer

        if (
            isinstance(visual, OpenCLIPVisionTransformer)
            and visual.attn_pool is None
            and visual.pool_type == "tok"
            and visual.positional_embedding.shape[0] == visual.grid_size[0] * visual.grid_size[1] + 1
        ):
            return OpenCLIPViTTower(visual)
    return None


def make_extra_class_tokens(model: nn.Module, num_class_tokens: int) -> ExtraClassTokens | None:
    """The K−1 extra class tokens for ``model``'s ViT tower, initialised from its class token; None when K is 1
    or the tower cannot take class tokens (see :func:`vit_tower`)."""
    tower = vit_tower(model)
    if tower is None or num_class_tokens == 1:
        return None
    tokens = ExtraClassTokens(num_class_tokens - 1, tower.width)
    tokens.initialize(tower.class_token())
    return tokens


# ---------------------------------------------------------------------------------------------------------------
# Transformer modules with image class tokens
# ---------------------------------------------------------------------------------------------------------------


class ImageClassTokensMixin:
    """For :class:`ClassTokenTransformer` subclasses whose model has a ViT image tower: K−1 extra class tokens,
    the image forward pass with them, and saving/loading them next to the Hugging Face checkpoint."""

    num_class_tokens: int
    model: nn.Module
    extra_class_tokens: ExtraClassTokens | None

    def _setup_image_class_tokens(self) -> None:
        self.extra_class_tokens = make_extra_class_tokens(self.model, self.num_class_tokens)

    def _encode_images(self, features: dict[str, Any]) -> dict[str, Any]:
        tower = vit_tower(self.model)
        features["token_embeddings"] = tower.token_states(features["pixel_values"], self.extra_class_tokens)
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        super().save(output_path, *args, safe_serialization=safe_serialization, **kwargs)
        if self.extra_class_tokens is not None:
            self.extra_class_tokens.save(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs):
        module = super().load(model_name_or_path, subfolder=subfolder, **kwargs)
        if module.extra_class_tokens is None:
            return module
        hub = {key: kwargs[key] for key in ("token", "cache_folder", "revision", "local_files_only") if key in kwargs}
        location = describe_location(model_name_or_path, subfolder, f"{CLASS_TOKENS_FOLDER}/model.safetensors")
        if load_file_path(model_name_or_path, f"{CLASS_TOKENS_FOLDER}/model.safetensors", subfolder=subfolder, **hub):
            module.extra_class_tokens.load(model_name_or_path, subfolder=subfolder, **hub)
        elif VERSION_KEY in Transformer.load_config(model_name_or_path, subfolder=subfolder, **hub):
            raise ObliqueLoadError(
                f"Cannot load {cls.__name__}: {location} is missing. The saved model is incomplete; save it again "
                "or download it again."
            )
        # else: a plain Hugging Face / Sentence Transformers model being turned into an oblique one.
        return module

    def __repr__(self) -> str:
        config = {key: value for key, value in self.get_config_dict().items() if key != VERSION_KEY}
        return f"{type(self).__name__}({dict(config, architecture=self.model.__class__.__name__)})"


class ImageClassTokenTransformer(ImageClassTokensMixin, ClassTokenTransformer):
    """ST's :class:`~sentence_transformers.base.modules.Transformer` for an image model, with K class tokens.

    - A ViT with a class token (a timm ViT through transformers' ``TimmWrapperModel``, a ``CLIPVisionModel``, or
      the vision tower of a ``CLIPModel``) gets K−1 extra learned class tokens (:class:`ExtraClassTokens`);
      its output ``token_embeddings`` are ``(B, K + N, H)`` with the K class tokens first: follow it with
      ``ObliquePooling(..., token_source="first")``.
    - Any other image model (CNNs such as EfficientNet or ResNet through ``TimmWrapperModel``/``AutoModel``, ViTs
      without a class token) outputs its last feature map flattened to ``(B, H*W, C)`` tokens (as ST's
      ``Transformer`` does); use ``num_class_tokens=1`` and ``ObliquePooling(..., token_source="attention")``.
      :attr:`image_token_source` says which applies.

    Inputs are images only: PIL images of any mode (converted to RGB), file paths, URLs, ``{"image": ...}`` dicts.
    Use it as the image route of a :class:`~st_oblique.modules.ModalityRouter` (see
    :func:`st_oblique.oblique_dual_encoder`).

    Args:
        model_name_or_path: Hub id or local path of a Hugging Face image model (``timm_wrapper``, ``clip_vision_model``,
            ``clip``, or any image ``AutoModel``).
        num_class_tokens: K (only ViTs with a class token take K > 1).
        **kwargs: everything ST's ``Transformer`` accepts (``model_kwargs``, ``processor_kwargs``, ...).

    Example::

        from st_oblique.modules import ImageClassTokenTransformer

        image_tower = ImageClassTokenTransformer("timm/vit_small_patch16_224.augreg_in21k", num_class_tokens=16)
        features = image_tower.preprocess(["cat.jpg"])
        tokens = image_tower(features)["token_embeddings"]  # (1, 16 + 196, 384)
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        num_class_tokens: int = 1,
        modality_config: dict | None = None,
        module_output_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if modality_config is not None and "image" not in modality_config:
            # Transformer.load's text-only default for a folder without a Sentence Transformers config: infer instead.
            modality_config = module_output_name = None
        super().__init__(
            model_name_or_path,
            num_class_tokens=num_class_tokens,
            modality_config=modality_config,
            module_output_name=module_output_name,
            **kwargs,
        )
        if "image" not in self.modality_config:
            raise ValueError(
                f"{model_name_or_path} is not an image model (its modalities are {self.modalities}); "
                "ImageClassTokenTransformer needs an image backbone."
            )
        tower = vit_tower(self.model)
        if tower is None and num_class_tokens > 1:
            raise ValueError(
                f"{type(self.model).__name__} ({model_name_or_path}) has no ViT class token to add class tokens to. "
                "Use num_class_tokens=1 and ObliquePooling(token_source='attention') over its feature map."
            )
        # Token states of the image tower only (a CLIPModel checkpoint also has a text tower: not used here).
        method = "get_image_features" if hasattr(self.model, "get_image_features") else "forward"
        self.modality_config = {"image": {"method": method, "method_output_name": "last_hidden_state"}}
        self.module_output_name = "token_embeddings"
        self.input_formatter.supported_modalities = ["image"]
        self._setup_image_class_tokens()

    def set_num_class_tokens(self, num_class_tokens: int) -> None:
        """Give the ViT ``num_class_tokens`` class tokens: its own and K−1 new learned ones (initialised from it).

        Raises:
            ValueError: the backbone has no ViT class token (K > 1), already has K > 1 class tokens, or K is not a
                positive integer.
        """
        if num_class_tokens == self.num_class_tokens:
            return
        if not isinstance(num_class_tokens, int) or num_class_tokens < 1:
            raise ValueError(f"num_class_tokens must be a positive integer, got {num_class_tokens!r}.")
        if self.num_class_tokens > 1:
            raise ValueError(
                f"This image tower already has {self.num_class_tokens} class tokens (possibly trained); "
                f"build it from the original backbone to use {num_class_tokens}."
            )
        if vit_tower(self.model) is None and num_class_tokens > 1:
            raise ValueError(f"{type(self.model).__name__} has no ViT class token to add class tokens to.")
        self.num_class_tokens = num_class_tokens
        self._setup_image_class_tokens()

    @property
    def image_token_source(self) -> str:
        """``"first"`` when the K class tokens come first (ViTs), ``"attention"`` for feature-map tokens."""
        return "first" if vit_tower(self.model) is not None else "attention"

    @property
    def class_token_placement(self) -> dict[str, str]:
        tower = vit_tower(self.model)
        if tower is None:
            return {"image": "no class token: the flattened final feature map, pooled by K learned attention queries"}
        if self.num_class_tokens == 1:
            return {"image": "the ViT's class token, unmodified"}
        return {"image": vit_class_token_placement(self.num_class_tokens)}

    def _check_bidirectional(self) -> None:
        """Image towers have no text to be causal about."""

    def preprocess(self, inputs, prompt: str | None = None, processing_kwargs=None, **kwargs) -> dict[str, Any]:
        """Images -> ``pixel_values`` ``(B, 3, H, W)`` with the checkpoint's image processor (RGB first)."""
        if not inputs:
            return {}
        batch_modality(type(self).__name__, inputs, ["image"])
        kwargs.pop("max_length", None)
        return Transformer.preprocess(self, load_images(inputs), processing_kwargs=processing_kwargs, **kwargs)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Writes ``token_embeddings``: ``(B, K + N, H)`` for ViTs (class tokens first), ``(B, H*W, C)`` otherwise."""
        if vit_tower(self.model) is not None:
            return self._encode_images(features)
        return super().forward(features, **kwargs)

    def get_embedding_dimension(self) -> int:
        tower = vit_tower(self.model)
        return tower.width if tower is not None else super().get_embedding_dimension()


def vit_class_token_placement(num_class_tokens: int) -> str:
    return (
        f"{num_class_tokens} class tokens at the front: the ViT's class token and {num_class_tokens - 1} learned "
        "class tokens inserted right after it (initialised from the class token plus its position embedding)"
    )
