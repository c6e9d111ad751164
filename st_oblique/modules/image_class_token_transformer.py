"""ImageClassTokenTransformer: ST's Transformer for an image model (timm, HF), with K class tokens in ViTs.

Also :class:`ImageClassTokensMixin`, which gives any :class:`~st_oblique.modules.ClassTokenTransformer` subclass
whose model has a ViT image tower its K−1 extra class tokens (used by
:class:`~st_oblique.modules.CLIPClassTokenTransformer` too).
"""

from __future__ import annotations

from typing import Any

from sentence_transformers.base.modules import Transformer
from sentence_transformers.util import load_file_path
from torch import nn

from st_oblique.data.images import batch_modality, load_images
from st_oblique.errors import ObliqueLoadError
from st_oblique.modules.class_token_transformer import ClassTokenTransformer
from st_oblique.modules.serialization import VERSION_KEY, describe_location
from st_oblique.modules.vit_towers import (
    CLASS_TOKENS_FOLDER,
    ExtraClassTokens,
    make_extra_class_tokens,
    vit_class_token_placement,
    vit_tower,
)
from st_oblique.validators import check_positive_int

__all__ = ["ImageClassTokenTransformer", "ImageClassTokensMixin"]


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
        # The image processor gives float32; a backbone loaded in another dtype (model_kwargs={"dtype": ...}) needs its own.
        pixel_values = features["pixel_values"].to(next(tower.module.parameters()).dtype)
        features["token_embeddings"] = tower.token_states(pixel_values, self.extra_class_tokens)
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

    ``locked_towers=["image"]`` (LiT) freezes the backbone and keeps it in eval mode (BatchNorm statistics as
    pretrained); the extra class tokens keep training. The lock is saved with the module and applied again on load.

    Args:
        model_name_or_path: Hub id or local path of a Hugging Face image model (``timm_wrapper``, ``clip_vision_model``,
            ``clip``, or any image ``AutoModel``).
        num_class_tokens: K (only ViTs with a class token take K > 1).
        locked_towers: ``["image"]`` to freeze the backbone; default: nothing locked.
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

    def _tower_parts(self) -> dict[str, tuple[list[nn.Parameter], list[nn.Module]]]:
        return {"image": (list(self.model.parameters()), [self.model])}

    def set_num_class_tokens(self, num_class_tokens: int) -> None:
        """Give the ViT ``num_class_tokens`` class tokens: its own and K−1 new learned ones (initialised from it).

        Raises:
            ValueError: the backbone has no ViT class token (K > 1), already has K > 1 class tokens, or K is not a
                positive whole number.
        """
        if num_class_tokens == self.num_class_tokens:
            return
        check_positive_int(num_class_tokens, name="num_class_tokens")
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
