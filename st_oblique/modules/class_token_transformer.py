"""ClassTokenTransformer: K class tokens for bidirectional text encoders (BERT, MiniLM, RoBERTa, ...)."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from sentence_transformers.base.modules import Transformer
from torch import nn
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from st_oblique.modules.serialization import VERSION_KEY, check_config_keys, describe_location, with_version
from st_oblique.modules.tower_lock import TowerLockMixin, without_empty_lock
from st_oblique.validators import check_positive_int

logger = logging.getLogger(__name__)

# Transformer configs written by older Sentence Transformers releases use these names.
_LEGACY_TRANSFORMER_KEYS = {"model_args", "tokenizer_args", "config_args"}
# Causal text towers that transformers also lists as bidirectional-capable are caught by name.
_CAUSAL_MODEL_TYPES = {"clip", "clip_text_model"}


class ClassTokenTransformer(TowerLockMixin, Transformer):
    """ST's :class:`~sentence_transformers.base.modules.Transformer` that prepends K−1 extra copies of the
    first token (``[CLS]``/``<s>``) to every text, so a bidirectional encoder outputs K class-token states.

    This is how the paper's official code builds its K class tokens for the text tower: the ``[CLS]`` id is
    tiled K times at the front, and the copies differ by their position embeddings. Follow it with
    ``ObliquePooling(..., token_source="first")``. With ``num_class_tokens=1`` the module is exactly ST's
    ``Transformer``.

    Lengths: the text itself is truncated to ``max_seq_length`` tokens as usual (``[CLS]`` and ``[SEP]``
    included); the K−1 copies come on top. When text plus copies would not fit the position table
    (``max_position_embeddings``), the text budget shrinks by K−1 so that nothing overflows. Padding is
    forced to the right so the class tokens are always the first K positions.

    Only for bidirectional encoders: in a causal tower the prepended tokens could not see the text (use
    :func:`st_oblique.oblique_clip` for CLIP, or ``token_source="attention"``).

    A locked text tower (``locked_towers=["text"]``, see :class:`~st_oblique.modules.tower_lock.TowerLockMixin`)
    is frozen and kept in eval mode; the lock is saved with the module and applied again on load.

    Args:
        model_name_or_path: Hub id or local path of a Hugging Face text encoder (or a saved ST model folder).
        num_class_tokens: K, the number of class-token states (``1`` = the unmodified model).
        locked_towers: ``["text"]`` to freeze the encoder (LiT); default: nothing locked.
        **kwargs: everything ST's ``Transformer`` accepts (``max_seq_length``, ``model_kwargs``, ...).

    Example::

        from sentence_transformers import SentenceTransformer
        from st_oblique import ObliquePooling
        from st_oblique.modules import ClassTokenTransformer

        backbone = ClassTokenTransformer("sentence-transformers/all-MiniLM-L6-v2", num_class_tokens=16)
        pooling = ObliquePooling(backbone.get_embedding_dimension(), num_tokens=16, token_dim=32)
        model = SentenceTransformer(modules=[backbone, pooling], similarity_fn_name="dot")
    """

    config_keys: list[str] = [*Transformer.config_keys, "num_class_tokens", "locked_towers"]

    def __init__(
        self,
        model_name_or_path: str,
        *,
        num_class_tokens: int = 1,
        locked_towers: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        check_positive_int(num_class_tokens, name="num_class_tokens")
        super().__init__(model_name_or_path, **kwargs)
        self.num_class_tokens = num_class_tokens
        self.locked_towers = []
        if num_class_tokens > 1:
            # Unpadded (flattened) batches have no row structure to put class tokens into.
            self.unpad_inputs = False
            self._check_bidirectional()
            if self.tokenizer is not None:
                self.tokenizer.padding_side = "right"
            limit = self.max_position_embeddings
            if limit is not None and limit <= num_class_tokens:
                raise ValueError(
                    f"num_class_tokens={num_class_tokens} does not fit the model's {limit} positions; "
                    "use fewer class tokens."
                )
        self.lock_towers(locked_towers or [])

    def _tower_parts(self) -> dict[str, tuple[list[nn.Parameter], list[nn.Module]]]:
        return {"text": (list(self.model.parameters()), [self.model])}

    @property
    def class_token_placement(self) -> dict[str, str]:
        """Where the class tokens sit, per modality (read by the model card and ``st-oblique info``)."""
        if self.num_class_tokens == 1:
            return {"text": "the encoder's first token ([CLS]), unmodified"}
        return {
            "text": f"{self.num_class_tokens} class tokens at the front: [CLS] and {self.num_class_tokens - 1} copies "
            "prepended to the text, told apart by their position embeddings (bidirectional encoder)"
        }

    @property
    def max_position_embeddings(self) -> int | None:
        """Size of the backbone's position table (None when it has none)."""
        limit = getattr(self.config, "max_position_embeddings", None)
        return None if limit in (None, -1) else int(limit)

    def preprocess(self, inputs, prompt: str | None = None, processing_kwargs=None, **kwargs) -> dict[str, Any]:
        """ST's preprocessing, then K−1 copies of the first token in front of every text.

        Returns features with ``input_ids``/``attention_mask`` (and ``token_type_ids``) of shape
        ``(B, K − 1 + L)``, where L is the tokenized length.
        """
        extra = self.num_class_tokens - 1
        if extra:
            kwargs["max_length"] = self._text_budget(kwargs.get("max_length"))
        features = super().preprocess(inputs, prompt=prompt, processing_kwargs=processing_kwargs, **kwargs)
        if extra and features.get("modality") == "text" and "input_ids" in features:
            features = prepend_class_tokens(features, extra)
            limit = self.max_position_embeddings
            if limit is not None and features["input_ids"].shape[1] > limit:
                raise ValueError(
                    f"Texts of {features['input_ids'].shape[1] - extra} tokens plus {extra} extra class tokens exceed "
                    f"the model's {limit} positions; lower max_length in processing_kwargs."
                )
        return features

    def _text_budget(self, requested: int | None) -> int | None:
        budget = requested if requested is not None else self.max_seq_length
        limit = self.max_position_embeddings
        if limit is None:
            return budget
        room = limit - (self.num_class_tokens - 1)
        return room if budget is None else min(budget, room)

    def _check_bidirectional(self) -> None:
        model_type = getattr(self.config, "model_type", None)
        causal = (
            model_type in _CAUSAL_MODEL_TYPES
            or getattr(self.config, "is_decoder", False)
            or (model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES)
        )
        if causal:
            raise ValueError(
                f"ClassTokenTransformer prepends class tokens, but {model_type!r} is a causal (left-to-right) "
                "model: tokens in front of the text cannot see it. For CLIP use st_oblique.oblique_clip (class "
                "positions after EOS); otherwise use ObliquePooling(token_source='attention') with num_class_tokens=1."
            )

    def get_config_dict(self) -> dict[str, Any]:
        return with_version(without_empty_lock(super().get_config_dict()))

    @classmethod
    def load_config(cls, model_name_or_path: str, subfolder: str = "", config_filename: str | None = None, **kwargs):
        config = super().load_config(model_name_or_path, subfolder=subfolder, config_filename=config_filename, **kwargs)
        if VERSION_KEY not in config:
            return config  # a plain ST/HF model that this module is being built from
        known = (
            set(cls.config_keys)
            | set(inspect.signature(cls.__init__).parameters)
            | set(inspect.signature(Transformer.__init__).parameters)
        )
        location = describe_location(model_name_or_path, subfolder, config_filename or cls.config_file_name)
        return check_config_keys(cls.__name__, location, config, known | _LEGACY_TRANSFORMER_KEYS)

    def __repr__(self) -> str:
        config = {key: value for key, value in self.get_config_dict().items() if key != VERSION_KEY}
        return f"ClassTokenTransformer({dict(config, architecture=self.model.__class__.__name__)})"


def prepend_class_tokens(features: dict[str, Any], extra: int) -> dict[str, Any]:
    """Put ``extra`` copies of each row's first token in front of it.

    Args:
        features: tokenizer output with ``input_ids`` ``(B, L)``, ``attention_mask`` ``(B, L)`` and optionally
            ``token_type_ids`` and ``prompt_length``; rows must be right-padded.
        extra: K − 1.

    Returns:
        The same dict with ``(B, extra + L)`` tensors; ``prompt_length`` grows by ``extra``.
    """
    input_ids = features["input_ids"]
    mask = features.get("attention_mask")
    if mask is not None and not bool(mask[:, 0].bool().all()):
        raise ValueError("Class tokens need right-padded text (the first position of every row must be a real token).")
    features["input_ids"] = torch.cat([input_ids[:, :1].expand(-1, extra), input_ids], dim=1)
    if mask is not None:
        features["attention_mask"] = torch.cat([mask.new_ones(mask.shape[0], extra), mask], dim=1)
    if "token_type_ids" in features:
        types = features["token_type_ids"]
        features["token_type_ids"] = torch.cat([types[:, :1].expand(-1, extra), types], dim=1)
    if "prompt_length" in features:
        features["prompt_length"] = features["prompt_length"] + extra
    return features
