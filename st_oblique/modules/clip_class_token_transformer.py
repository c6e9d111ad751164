"""CLIPClassTokenTransformer: K class tokens in both towers of a Hugging Face ``CLIPModel``."""

from __future__ import annotations

import logging
from typing import Any

import torch
from sentence_transformers.base.modules import Transformer
from torch import nn

from st_oblique.data.images import batch_modality, load_images
from st_oblique.modules.class_token_transformer import ClassTokenTransformer
from st_oblique.modules.image_class_token_transformer import ImageClassTokensMixin
from st_oblique.modules.vit_towers import vit_class_token_placement, vit_tower

logger = logging.getLogger(__name__)

TOKEN_MODALITY_CONFIG: dict[str, dict[str, str]] = {
    "text": {"method": "get_text_features", "method_output_name": "last_hidden_state"},
    "image": {"method": "get_image_features", "method_output_name": "last_hidden_state"},
}
"""Per-token states of both towers (ST's default for CLIP is the pooled, projected vector)."""


class CLIPClassTokenTransformer(ImageClassTokensMixin, ClassTokenTransformer):
    """ST's :class:`~sentence_transformers.base.modules.Transformer` for a Hugging Face CLIP model, with K class
    tokens in each tower.

    - **Image** (a bidirectional ViT): K−1 learned class tokens are inserted right after CLIP's class token (see
      :class:`~st_oblique.modules.vit_towers.ExtraClassTokens`). Output ``token_embeddings`` ``(B, K + N, H_v)``, class
      tokens first, after CLIP's ``post_layernorm`` (which CLIP itself applies to the pooled class token only).
    - **Text** (a *causal* transformer: a token only sees the tokens before it, so class tokens must come after
      the caption): K−1 extra EOS tokens are appended right after each caption's EOS, with attention mask 1. The
      K states ending at the last real position (the EOS and its copies) each see the whole caption; they differ
      by their position embeddings. Captions are truncated K−1 tokens earlier so that nothing overflows CLIP's
      position table (77 positions). Output ``token_embeddings`` ``(B, L + K − 1, H_t)`` after
      ``final_layer_norm``, with the ``attention_mask``.

    Follow it with ``ObliquePooling({"text": H_t, "image": H_v}, token_source={"text": "last", "image": "first"})``
    (:func:`st_oblique.oblique_clip` does this). With ``num_class_tokens=1`` the class states are exactly what
    CLIP's ``get_text_features`` / ``get_image_features`` project.

    Images may be PIL images of any mode (converted to RGB), paths, URLs or ``{"image": ...}`` dicts. A batch
    mixing images and texts is rejected with ST's error; encode each modality separately.

    The Hugging Face checkpoint is saved unchanged (``CLIPModel.from_pretrained`` loads the saved folder); the
    extra image tokens live in ``oblique_class_tokens/model.safetensors``. CLIP's own projections and
    ``logit_scale`` are not used (the oblique head replaces them) and are frozen.

    ``locked_towers=["image"]`` (LiT) freezes CLIP's vision tower and keeps it in eval mode, ``["text"]`` its text
    tower; the extra class tokens keep training. The lock is saved with the module and applied again on load.

    Args:
        model_name_or_path: Hub id or local path of a Hugging Face CLIP model (``model_type="clip"``), e.g.
            ``"openai/clip-vit-base-patch32"``, or of a Sentence Transformers folder holding one.
        num_class_tokens: K.
        locked_towers: the towers to freeze, ``["image"]``, ``["text"]`` or both; default: none.
        **kwargs: everything ST's ``Transformer`` accepts (``model_kwargs``, ``processor_kwargs``, ...).

    Example::

        from sentence_transformers import SentenceTransformer
        from st_oblique import ObliquePooling
        from st_oblique.modules import CLIPClassTokenTransformer

        clip = CLIPClassTokenTransformer("openai/clip-vit-base-patch32", num_class_tokens=16)
        pooling = ObliquePooling(clip.embedding_dimensions, num_tokens=16, token_dim=32,
                                 token_source={"text": "last", "image": "first"})
        model = SentenceTransformer(modules=[clip, pooling], similarity_fn_name="dot")
        text_embeddings = model.encode(["a photo of a cat"])  # (1, 512)
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        num_class_tokens: int = 1,
        modality_config: dict | None = None,
        module_output_name: str | None = None,
        locked_towers: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if modality_config is not None and modality_config != TOKEN_MODALITY_CONFIG:
            # e.g. the pooled configuration of a stock ST CLIP folder: this module always needs token states.
            logger.info(f"CLIPClassTokenTransformer uses per-token states; ignoring modality_config={modality_config}.")
        super().__init__(
            model_name_or_path,
            num_class_tokens=num_class_tokens,
            modality_config=dict(TOKEN_MODALITY_CONFIG),
            module_output_name="token_embeddings",
            **kwargs,
        )
        if self.config.model_type != "clip" or vit_tower(self.model) is None:
            raise ValueError(
                f"CLIPClassTokenTransformer needs a Hugging Face CLIP model (model_type 'clip'), but {model_name_or_path} "
                f"is {self.config.model_type!r}. For separate text and image towers use st_oblique.oblique_dual_encoder."
            )
        # The oblique head replaces CLIP's projections and temperature; frozen so that nothing waits for a
        # gradient that never comes (DDP) and the trainer does not decay them.
        for unused in (self.model.visual_projection, self.model.text_projection):
            unused.requires_grad_(False)
        self.model.logit_scale.requires_grad_(False)
        self._setup_image_class_tokens()
        self.lock_towers(locked_towers or [])  # here, once the model is known to be a CLIP model

    def _tower_parts(self) -> dict[str, tuple[list[nn.Parameter], list[nn.Module]]]:
        towers = {"text": self.model.text_model, "image": self.model.vision_model}
        return {modality: (list(tower.parameters()), [tower]) for modality, tower in towers.items()}

    @property
    def max_position_embeddings(self) -> int | None:
        """Size of the text tower's position table."""
        text_config = getattr(self.config, "text_config", None)
        return None if text_config is None else int(text_config.max_position_embeddings)

    @property
    def embedding_dimensions(self) -> dict[str, int]:
        """Width of the token states per modality: ``{"text": H_t, "image": H_v}``."""
        return {"text": self.config.text_config.hidden_size, "image": self.config.vision_config.hidden_size}

    @property
    def class_token_placement(self) -> dict[str, str]:
        """Where the class tokens sit, per modality (read by the model card and ``st-oblique info``)."""
        if self.num_class_tokens == 1:
            return {"text": after_eos_placement(1, "EOS"), "image": "CLIP's class token, unmodified"}
        return {
            "text": after_eos_placement(self.num_class_tokens, "EOS"),
            "image": vit_class_token_placement(self.num_class_tokens),
        }

    def _check_bidirectional(self) -> None:
        """CLIP's text tower is causal; its class positions go after EOS, where they see the whole caption."""

    def preprocess(self, inputs, prompt: str | None = None, processing_kwargs=None, **kwargs) -> dict[str, Any]:
        """Images -> ``pixel_values``; texts -> ``input_ids``/``attention_mask`` ``(B, L + K − 1)`` with K−1 EOS
        copies after each caption's EOS."""
        if not inputs:
            return {}
        modality = batch_modality(type(self).__name__, inputs, ["text", "image"])
        if modality == "image":
            kwargs.pop("max_length", None)
            return Transformer.preprocess(self, load_images(inputs), processing_kwargs=processing_kwargs, **kwargs)
        extra = self.num_class_tokens - 1
        if extra:
            kwargs["max_length"] = self._text_budget(kwargs.get("max_length"))
        # Not ClassTokenTransformer.preprocess: that one prepends, which a causal tower cannot use.
        features = Transformer.preprocess(self, inputs, prompt=prompt, processing_kwargs=processing_kwargs, **kwargs)
        if extra:
            features = append_class_positions(features, extra, self.tokenizer.eos_token_id)
            if features["input_ids"].shape[1] > self.max_position_embeddings:
                raise ValueError(
                    f"Texts of {features['input_ids'].shape[1] - extra} tokens plus {extra} class positions exceed "
                    f"CLIP's {self.max_position_embeddings} positions; lower max_length in processing_kwargs."
                )
        return features

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Writes ``token_embeddings``: ``(B, K + N, H_v)`` for images, ``(B, L + K − 1, H_t)`` for texts."""
        if features.get("modality") == "image":
            return self._encode_images(features)
        return super().forward(features, **kwargs)

    def get_embedding_dimension(self) -> int:
        """Width of the text token states (see :attr:`embedding_dimensions` for both towers)."""
        return self.embedding_dimensions["text"]


def after_eos_placement(num_class_tokens: int, eos_name: str) -> str:
    """``class_token_placement`` text of a causal text tower with class positions after its end token."""
    if num_class_tokens == 1:
        return f"the {eos_name} token, unmodified (causal tower)"
    return (
        f"{num_class_tokens} class positions after the caption: its {eos_name} and {num_class_tokens - 1} {eos_name} "
        "copies appended right after it (causal tower: only positions after the caption see all of it)"
    )


def append_class_positions(features: dict[str, Any], extra: int, eos_token_id: int | None = None) -> dict[str, Any]:
    """Append ``extra`` EOS tokens right after the last real token (the EOS) of each right-padded row.

    Args:
        features: tokenizer output with ``input_ids`` and ``attention_mask`` of shape ``(B, L)``, right-padded.
        extra: K − 1.
        eos_token_id: the id to append; None repeats each row's last real token.

    Returns:
        The dict with ``(B, L + extra)`` tensors; the new positions have attention mask 1, padding stays last.
    """
    input_ids, mask = features["input_ids"], features["attention_mask"]
    lengths = mask.sum(dim=1, keepdim=True)
    if not bool((mask == (torch.arange(mask.shape[1], device=mask.device) < lengths).to(mask.dtype)).all()):
        raise ValueError("Class positions after EOS need right-padded text (padding_side='right').")
    positions = torch.arange(input_ids.shape[1] + extra, device=input_ids.device).unsqueeze(0)
    padded = torch.cat([input_ids, input_ids[:, -1:].expand(-1, extra)], dim=1)  # any filler; replaced below
    new_mask = (positions < lengths + extra).to(mask.dtype)
    is_class_position = (positions >= lengths) & new_mask.bool()
    if eos_token_id is None:
        fill = input_ids.gather(1, (lengths - 1).clamp(min=0)).expand_as(padded)
    else:
        fill = torch.full_like(padded, eos_token_id)
    features["input_ids"] = torch.where(is_class_position, fill, padded)
    features["attention_mask"] = new_mask
    return features
