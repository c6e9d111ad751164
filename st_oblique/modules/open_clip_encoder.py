"""OpenCLIPEncoder: any open_clip model as a Sentence Transformers input module, with K class tokens."""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from open_clip.transformer import TextTransformer
from safetensors.torch import save_model
from sentence_transformers.base.modules import InputModule
from sentence_transformers.util import load_dir_path
from torch import Tensor, nn

from st_oblique.data.images import batch_modality, load_images
from st_oblique.errors import ObliqueLoadError
from st_oblique.modules.clip_class_token_transformer import after_eos_placement, append_class_positions
from st_oblique.modules.serialization import (
    describe_location,
    load_module_config,
    load_module_weights,
    with_version,
)
from st_oblique.modules.tower_lock import TowerLockMixin, without_empty_lock
from st_oblique.modules.vit_towers import make_extra_class_tokens, vit_class_token_placement, vit_tower
from st_oblique.validators import check_positive_int

OPEN_CLIP_CONFIG = "open_clip_config.json"
"""open_clip's own config file (``{"model_cfg": ..., "preprocess_cfg": ...}``), as read by ``local-dir:`` and
``hf-hub:`` model names."""

_POOLED_TEXT = ("argmax", "eos")
_CREATE_MODEL_ARGS = frozenset(inspect.signature(open_clip.create_model).parameters) - {"model_kwargs"}
LOADING_ARGS = frozenset(
    {"precision", "pretrained_image", "pretrained_text", "pretrained_image_path", "pretrained_text_path",
     "require_pretrained", "weights_only"}
)
"""``open_clip.create_model`` arguments that ``model_kwargs`` may hold: they change how the model is loaded, not its
architecture (the others are set by OpenCLIPEncoder, or change the architecture without it being saved)."""
_PREPROCESS_KEYS = frozenset(PreprocessCfg.__dataclass_fields__)


class OpenCLIPEncoder(TowerLockMixin, InputModule):
    """An `open_clip <https://github.com/mlfoundations/open_clip>`_ model as a Sentence Transformers input module,
    with K class tokens in each tower.

    The model is built with ``open_clip.create_model(model_name, pretrained=...)``, so every name open_clip knows
    works: built-in architectures with a pretrained tag or a local checkpoint file, ``hf-hub:org/repo``,
    ``local-dir:/path``, and custom configs registered with ``open_clip.add_model_config`` or given as
    ``model_kwargs`` overrides. Images go through open_clip's own evaluation transform, texts through its tokenizer
    (the BPE ``SimpleTokenizer`` ships with open_clip and works offline).

    - **Image**, ViT towers with class-token pooling: K−1 learned class tokens are inserted right after the class
      token (:class:`~st_oblique.modules.vit_towers.ExtraClassTokens`); ``token_embeddings`` ``(B, K + N, W)`` after
      ``ln_post``, class tokens first. Other towers (ModifiedResNet, timm CNNs): the last feature map flattened to
      tokens, ``(B, H*W, C)``, for ``ObliquePooling(token_source="attention")``. :attr:`image_token_source` says
      which applies.
    - **Text** (causal): K−1 copies of the EOT token right after each caption's EOT; ``token_embeddings``
      ``(B, L, W)`` after ``ln_final`` with an ``attention_mask`` marking caption and class positions, for
      ``ObliquePooling(token_source="last")``. Captions are truncated K−1 tokens earlier so that everything fits the
      context (77 for CLIP). Trailing padding is cut for causal towers (it cannot change earlier positions), so
      short captions cost less than the full context.

    Images may be PIL images of any mode (converted to RGB), paths, URLs or ``{"image": ...}`` dicts; a prompt is
    applied to texts only. A batch mixing images and texts is rejected with ST's error; encode each modality
    separately.

    With ``num_class_tokens=1`` the class states are exactly what ``model.encode_image`` / ``model.encode_text``
    project. ``logit_scale``, ``logit_bias`` and the two projections are not used (the oblique head replaces them)
    and are frozen.

    ``locked_towers=["image"]`` (LiT) freezes ``model.visual`` and keeps it in eval mode, ``["text"]`` every other
    parameter of the model (the text transformer kept in eval mode); the extra class tokens keep training. The lock
    is saved with the module and applied again on load.

    Saving writes open_clip's own layout (``open_clip_config.json`` + ``model.safetensors``, loadable with
    ``open_clip.create_model("local-dir:<folder>")``), the extra class tokens in
    ``oblique_class_tokens/model.safetensors`` and this module's settings in ``oblique_open_clip_config.json``.

    Args:
        model_name: an open_clip model name (``"ViT-B-32"``, ``"hf-hub:org/repo"``, ``"local-dir:/path"``, or a
            name registered with ``open_clip.add_model_config``), or a local folder in open_clip's layout.
        pretrained: a pretrained tag (e.g. ``"laion2b_s34b_b79k"``) or a local checkpoint file; None for random
            weights (ignored for ``hf-hub:``/``local-dir:`` names, which carry their weights).
        num_class_tokens: K.
        model_kwargs: keyword arguments of ``open_clip.create_model`` that change how the model is loaded
            (:data:`LOADING_ARGS`: ``precision``, ``pretrained_image``, ``weights_only``, ...). Other keys are model
            config overrides, as ``create_model(**model_kwargs)`` takes them (see ``config_kwargs``).
        config_kwargs: top-level model config overrides (e.g. ``{"embed_dim": 32, "vision_cfg": {...},
            "text_cfg": {...}}``: a nested dict replaces the whole entry); saved with the model.
        processor_kwargs: image preprocessing overrides (``size``, ``mean``, ``std``, ``interpolation``,
            ``resize_mode``, ``fill_color``), as ``create_model(force_preprocess_cfg=...)``; saved with the model.
        cache_folder: open_clip's download cache (its ``cache_dir``).
        load_weights: False to skip loading ``pretrained`` (random weights).
        locked_towers: the towers to freeze, ``["image"]``, ``["text"]`` or both; default: none.

    Example::

        from sentence_transformers import SentenceTransformer
        from st_oblique import ObliquePooling
        from st_oblique.modules import OpenCLIPEncoder

        encoder = OpenCLIPEncoder("ViT-B-32", pretrained="laion2b_s34b_b79k", num_class_tokens=16)
        pooling = ObliquePooling(encoder.embedding_dimensions, num_tokens=16, token_dim=32,
                                 token_source={"text": "last", "image": encoder.image_token_source})
        model = SentenceTransformer(modules=[encoder, pooling], similarity_fn_name="dot")
        image_embeddings = model.encode(["cat.jpg"])  # (1, 512)
    """

    config_file_name = "oblique_open_clip_config.json"
    config_keys: list[str] = ["model_name", "pretrained", "num_class_tokens", "locked_towers"]
    save_in_root = True

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        num_class_tokens: int = 1,
        *,
        model_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        cache_folder: str | None = None,
        load_weights: bool = True,
        locked_towers: list[str] | None = None,
    ) -> None:
        super().__init__()
        check_positive_int(num_class_tokens, name="num_class_tokens")
        loading, config_overrides = _split_model_kwargs(model_kwargs or {})
        config_overrides.update(config_kwargs or {})
        preprocess_overrides = _check_processor_kwargs(processor_kwargs or {})
        if os.path.isdir(model_name):  # a folder in open_clip's layout (open_clip_config.json + weights)
            model_name = f"local-dir:{model_name}"
        self.model_name = model_name
        self.pretrained = pretrained
        self.num_class_tokens = num_class_tokens
        self.locked_towers = []
        self._max_caption_length: int | None = None
        with _quiet_random_init_warning(not load_weights):
            self.model = open_clip.create_model(
                model_name, pretrained=pretrained, cache_dir=cache_folder, load_weights=load_weights,
                force_preprocess_cfg=preprocess_overrides, **loading, **config_overrides,
            )
        self.model_cfg = {**copy.deepcopy(open_clip.get_model_config(model_name) or {}), **config_overrides}
        self.preprocess_cfg = copy.deepcopy(open_clip.get_model_preprocess_cfg(self.model))
        self.image_transform = image_transform_v2(PreprocessCfg(**self.preprocess_cfg), is_train=False)
        self.tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_folder)
        self._check_text_tower()

        for owner, name in ((self.model, "logit_scale"), (self.model, "logit_bias"), (self.text_tower, "text_projection"),
                            (self.model.visual, "proj")):
            unused = getattr(owner, name, None)
            if unused is not None:
                unused.requires_grad_(False)

        self.extra_class_tokens = make_extra_class_tokens(self.model, num_class_tokens)
        self._feature_map_width = None if vit_tower(self.model) is not None else self._measure_feature_map_width()
        self.lock_towers(locked_towers or [])

    def _tower_parts(self) -> dict[str, tuple[list[nn.Parameter], list[nn.Module]]]:
        visual = self.model.visual
        visual_ids = {id(parameter) for parameter in visual.parameters()}
        text = [parameter for parameter in self.model.parameters() if id(parameter) not in visual_ids]
        transformer = getattr(self.text_tower, "transformer", None)
        return {
            "image": (list(visual.parameters()), [visual]),
            "text": (text, [transformer] if transformer is not None else []),
        }

    # -- description ----------------------------------------------------------------------------------------------

    @property
    def modalities(self) -> list[str]:
        return ["text", "image"]

    @property
    def text_tower(self) -> torch.nn.Module:
        """The module holding the text transformer (``CLIP`` keeps its parts on the model itself)."""
        return getattr(self.model, "text", self.model)

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.context_length)

    @property
    def max_seq_length(self) -> int:
        """Longest caption in tokens (start and end tokens included); the K−1 class positions come on top.

        At most the context length minus K−1; can be set lower (``model.max_seq_length = 32``).
        """
        room = self.context_length - (self.num_class_tokens - 1)
        return room if self._max_caption_length is None else min(room, self._max_caption_length)

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        if value is not None:
            check_positive_int(value, name="max_seq_length")
        self._max_caption_length = value

    @property
    def embedding_dimensions(self) -> dict[str, int]:
        """Width of the token states per modality: ``{"text": W_t, "image": W_v}``."""
        tower = vit_tower(self.model)
        image_width = tower.width if tower is not None else self._feature_map_width
        return {"text": int(self.text_tower.ln_final.normalized_shape[0]), "image": int(image_width)}

    @property
    def image_token_source(self) -> str:
        """``"first"`` when the image tower has K class tokens first (ViTs), ``"attention"`` for feature maps."""
        return "first" if vit_tower(self.model) is not None else "attention"

    @property
    def class_token_placement(self) -> dict[str, str]:
        """Where the class tokens sit, per modality (read by the model card and ``st-oblique info``)."""
        if vit_tower(self.model) is None:
            image = "no class token: the flattened final feature map, pooled by K learned attention queries"
        elif self.num_class_tokens == 1:
            image = "the ViT's class token, unmodified"
        else:
            image = vit_class_token_placement(self.num_class_tokens)
        return {"text": after_eos_placement(self.num_class_tokens, "EOT"), "image": image}

    def get_embedding_dimension(self) -> int:
        """Width of the text token states (see :attr:`embedding_dimensions` for both towers)."""
        return self.embedding_dimensions["text"]

    def get_config_dict(self) -> dict[str, Any]:
        return with_version(without_empty_lock(super().get_config_dict()))

    def __repr__(self) -> str:
        locked = f", 'locked_towers': {self.locked_towers}" if self.locked_towers else ""
        return (
            f"OpenCLIPEncoder({{'model_name': {self.model_name!r}, 'pretrained': {self.pretrained!r}, "
            f"'num_class_tokens': {self.num_class_tokens}{locked}, 'architecture': '{type(self.model).__name__}'}})"
        )

    # -- inputs ---------------------------------------------------------------------------------------------------

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
        """Images -> ``pixel_values`` ``(B, 3, H, W)``; texts -> ``input_ids`` and ``attention_mask`` ``(B, L)``.

        The prompt, if any, is prepended to texts only. A trainer's ``max_length`` caps the caption length.
        """
        if not inputs:
            return {}
        modality = batch_modality(type(self).__name__, inputs, self.modalities)
        if modality == "image":
            pixel_values = torch.stack([self.image_transform(image) for image in load_images(inputs)])
            return {"pixel_values": pixel_values, "modality": "image"}
        if any(not isinstance(text, str) for text in inputs):
            raise ValueError("OpenCLIPEncoder encodes single texts; text pairs are not supported.")
        texts = [prompt + text for text in inputs] if prompt else list(inputs)
        budget = self.max_seq_length if kwargs.get("max_length") is None else min(self.max_seq_length, kwargs["max_length"])
        return self._tokenize(texts, budget)

    def _tokenize(self, texts: list[str], budget: int) -> dict[str, Any]:
        eos_id = getattr(self.model, "text_eos_id", None) or getattr(self.text_tower, "eos_id", None)
        return open_clip_text_features(
            self.tokenizer, texts, budget, num_class_tokens=self.num_class_tokens, pool_type=self._text_pool_type,
            eos_id=eos_id, causal=self.text_tower.attn_mask is not None,
        )

    # -- forward --------------------------------------------------------------------------------------------------

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Writes ``token_embeddings``: ``(B, L, W_t)`` for texts; ``(B, K + N, W_v)`` (ViT) or ``(B, H*W, C)``
        for images."""
        if features.get("modality") == "image":
            features["token_embeddings"] = self._image_token_states(features["pixel_values"])
        else:
            features["token_embeddings"] = self._text_token_states(features["input_ids"])
        return features

    def _text_token_states(self, input_ids: Tensor) -> Tensor:
        """``(B, L, W_t)`` after ``ln_final``.

        Causal towers run on the captions cut after their last class position (padding after it cannot change an
        earlier state), with the same embedding, mask and layers as open_clip's ``encode_text``; checked against
        ``encode_text`` on full-length input (tests/modules/test_vit_tower_parity.py). Bidirectional towers run
        open_clip's own forward on the full-length input (its padding mask included), whose transformer output is
        read by a forward hook.
        """
        tower = self.text_tower
        if tower.attn_mask is None and isinstance(tower, TextTransformer):
            states = []
            handle = tower.transformer.register_forward_hook(lambda module, args, output: states.append(output))
            try:
                tower(input_ids)
            finally:
                handle.remove()
            return tower.ln_final(states[0])
        length = input_ids.shape[1]
        cast_dtype = tower.transformer.get_cast_dtype()
        hidden = tower.token_embedding(input_ids).to(cast_dtype)
        hidden = hidden + tower.positional_embedding[:length].to(cast_dtype)
        attn_mask = None if tower.attn_mask is None else tower.attn_mask[:length, :length]
        return tower.ln_final(tower.transformer(hidden, attn_mask=attn_mask))

    def _image_token_states(self, pixel_values: Tensor) -> Tensor:
        tower = vit_tower(self.model)
        if tower is not None:
            return tower.token_states(pixel_values, self.extra_class_tokens)
        feature_map = self.model.visual.forward_intermediates(
            pixel_values, indices=1, intermediates_only=True, output_fmt="NCHW"
        )["image_intermediates"][-1]
        return feature_map.flatten(2).transpose(1, 2)

    @torch.no_grad()
    def _measure_feature_map_width(self) -> int:
        size = self.preprocess_cfg["size"]
        height, width = (size, size) if isinstance(size, int) else size
        was_training = self.model.training
        self.model.eval()
        states = self._image_token_states(torch.zeros(1, 3, height, width))
        self.model.train(was_training)
        return states.shape[-1]

    def _check_text_tower(self) -> None:
        tower = self.text_tower
        if tower is not self.model and not (isinstance(tower, TextTransformer) and tower.cls_emb is None):
            raise ValueError(
                f"OpenCLIPEncoder supports open_clip's own text transformer; {self.model_name!r} has a "
                f"{type(tower).__name__} text tower. Use st_oblique.oblique_dual_encoder with a Hugging Face text model."
            )
        if self._text_pool_type not in _POOLED_TEXT:
            raise ValueError(
                f"OpenCLIPEncoder needs a text tower that pools its EOT token (pool_type 'argmax' or 'eos'); "
                f"{self.model_name!r} uses {self._text_pool_type!r}."
            )

    @property
    def _text_pool_type(self) -> str:
        return getattr(self.model, "text_pool_type", None) or getattr(self.text_tower, "pool_type", "argmax")

    # -- saving and loading ---------------------------------------------------------------------------------------

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        if not safe_serialization:
            raise ValueError("OpenCLIPEncoder saves its weights as safetensors only; use safe_serialization=True.")
        os.makedirs(output_path, exist_ok=True)
        with open(os.path.join(output_path, OPEN_CLIP_CONFIG), "w", encoding="utf-8") as handle:
            json.dump({"model_cfg": self.model_cfg, "preprocess_cfg": self.preprocess_cfg}, handle, indent=2)
        save_model(self.model, os.path.join(output_path, "model.safetensors"))
        if self.extra_class_tokens is not None:
            self.extra_class_tokens.save(output_path)
        if hasattr(self.tokenizer, "save_pretrained"):  # Hugging Face tokenizers; the BPE one ships with open_clip
            self.tokenizer.save_pretrained(output_path)
        self.save_config(output_path)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> OpenCLIPEncoder:
        """Load a saved module from a local folder or a Hub repo, offline when the files are local.

        Raises:
            ObliqueLoadError: a missing or damaged config or weights file (the message names it).
        """
        hub = {
            "subfolder": subfolder,
            "token": token,
            "cache_folder": cache_folder,
            "revision": revision,
            "local_files_only": local_files_only,
        }
        config = load_module_config(
            cls, model_name_or_path, config_keys=cls.config_keys, required_keys=["model_name"],
            filename=cls.config_file_name, **hub,
        )
        load_module_config(
            cls, model_name_or_path, config_keys=["model_cfg", "preprocess_cfg"], required_keys=["model_cfg"],
            filename=OPEN_CLIP_CONFIG, **hub,
        )
        folder = load_dir_path(model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
                               revision=revision, local_files_only=local_files_only)
        try:
            module = cls(
                f"local-dir:{folder}",
                num_class_tokens=config.get("num_class_tokens", 1),
                load_weights=False,
                locked_towers=config.get("locked_towers"),
            )
        except (TypeError, ValueError, KeyError) as error:
            location = describe_location(model_name_or_path, subfolder, OPEN_CLIP_CONFIG)
            raise ObliqueLoadError(f"Cannot load OpenCLIPEncoder: {location} holds an invalid config: {error}") from error
        module.model_name, module.pretrained = config["model_name"], config.get("pretrained")
        load_module_weights(module.model, model_name_or_path, **hub)
        if module.extra_class_tokens is not None:
            module.extra_class_tokens.load(model_name_or_path, **hub)
        return module


def open_clip_text_features(
    tokenizer: Any,
    texts: list[str],
    budget: int,
    *,
    num_class_tokens: int,
    pool_type: str,
    eos_id: int | None,
    causal: bool,
) -> dict[str, Any]:
    """open_clip's tokenization of ``texts`` with K−1 class positions after each caption's EOT.

    Args:
        tokenizer: the model's open_clip tokenizer (called with ``context_length=budget``).
        texts: the captions (prompt already prepended).
        budget: the caption length in tokens, start and end tokens included.
        num_class_tokens: K; K−1 copies of the EOT token follow it.
        pool_type: the text tower's pooling, ``"argmax"`` (the EOT has the largest id) or ``"eos"``.
        eos_id: the EOT id (used by ``"eos"``).
        causal: the tower is causal; the padding after the last class position is then cut (it cannot change an
            earlier state), so short captions cost less than the full context.

    Returns:
        ``{"input_ids", "attention_mask"}`` of shape ``(B, L)`` (mask 1 on caption and class positions) and
        ``"modality": "text"``. Also the text preprocessing of an exported open_clip model
        (:mod:`st_oblique.modules.exported_inputs`).
    """
    input_ids = tokenizer(texts, context_length=budget)
    if pool_type == "argmax":
        end = input_ids.argmax(dim=-1)  # where open_clip pools: the EOT token
    else:
        end = (input_ids == eos_id).int().argmax(dim=-1)
    positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
    features = {"input_ids": input_ids, "attention_mask": (positions <= end.unsqueeze(1)).long()}
    features = append_class_positions(features, num_class_tokens - 1)
    if causal:
        # Causal tower: padding after the last class position cannot change any state we read.
        length = int(features["attention_mask"].sum(dim=1).max())
        features = {key: value[:, :length] for key, value in features.items()}
    features["modality"] = "text"
    return features


def _split_model_kwargs(model_kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(loading arguments of open_clip.create_model, model config overrides)`` of ``model_kwargs``.

    Raises:
        ValueError: an argument OpenCLIPEncoder sets itself or one that changes the architecture unseen.
    """
    if "torch_dtype" in model_kwargs or "dtype" in model_kwargs:
        raise ValueError(
            "open_clip models take their dtype as model_kwargs={'precision': 'fp16' | 'bf16' | 'pure_bf16' | ...}, "
            "not torch_dtype/dtype."
        )
    refused = sorted(set(model_kwargs) & (_CREATE_MODEL_ARGS - LOADING_ARGS))
    if refused:
        raise ValueError(
            f"model_kwargs {refused} cannot be used: OpenCLIPEncoder sets the download cache (cache_folder), the "
            "pretrained weights (pretrained) and the device itself, and force_* arguments change the architecture "
            "without it being saved; change the model config with config_kwargs instead (e.g. "
            "{'quick_gelu': True}, or a whole 'vision_cfg' / 'text_cfg' dict), and image preprocessing with "
            f"processor_kwargs. model_kwargs takes {sorted(LOADING_ARGS)}."
        )
    loading = {key: value for key, value in model_kwargs.items() if key in LOADING_ARGS}
    return loading, {key: value for key, value in model_kwargs.items() if key not in LOADING_ARGS}


def _check_processor_kwargs(processor_kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(processor_kwargs) - _PREPROCESS_KEYS)
    if unknown:
        raise ValueError(
            f"processor_kwargs {unknown} are not open_clip preprocessing settings; open_clip takes "
            f"{sorted(_PREPROCESS_KEYS)} (its tokenizer has no options to set)."
        )
    return dict(processor_kwargs)


class _RandomInitFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def _quiet_random_init_warning(active: bool) -> Iterator[None]:
    """Hide open_clip's "Model initialized randomly" warning when the weights are loaded right afterwards."""
    if not active:
        yield
        return
    root, log_filter = logging.getLogger(), _RandomInitFilter()
    root.addFilter(log_filter)
    try:
        yield
    finally:
        root.removeFilter(log_filter)
