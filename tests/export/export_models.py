"""Tiny oblique models of every tower family st-oblique builds, and the inputs the export tests encode."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tiny_models import SENTENCES, tiny_images

import st_oblique

K, D = 4, 8
LONG_BERT_POSITIONS = 256
"""The tiny BERT of these tests has a 256-position table, so a 200-token text and a 3-token text share a graph."""
TINY_RESNET = {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16}

SHORT_TEXT = "a dog runs"  # 3 tokens (5 with [CLS] and [SEP]) for the tiny BERT's tokenizer
LONG_TEXT = " ".join(SENTENCES * 4)  # 204 tokens (206 with [CLS] and [SEP])


def text_inputs() -> list[str]:
    """Texts from 1 word to the longest the towers take (an odd count: 11)."""
    return [SHORT_TEXT, LONG_TEXT, *SENTENCES, "rain"]


def image_inputs() -> list:
    """Images of several sizes and modes (an odd count: 7)."""
    images = tiny_images(3) + tiny_images(2, size=(64, 30), seed=1) + tiny_images(1, size=(17, 90), seed=2)
    return [*images, images[0].convert("L")]


def oblique(model, inputs, **encode_kwargs) -> torch.Tensor:
    """``(N, K*d)`` embeddings as a float32 CPU tensor."""
    return model.encode(inputs, convert_to_tensor=True, show_progress_bar=False, **encode_kwargs).float().cpu()


FAMILIES: dict[str, Callable[[dict[str, str]], st_oblique.ObliqueSentenceTransformer]] = {
    # BERT-like text tower, K class tokens prepended (ClassTokenTransformer)
    "bert": lambda dirs: st_oblique.oblique_text_model(dirs["bert"], num_tokens=K, token_dim=D, device="cpu"),
    # Hugging Face CLIP: causal text tower (class positions after EOS), ViT with K class tokens
    "hf_clip": lambda dirs: st_oblique.oblique_clip(dirs["clip"], num_tokens=K, token_dim=D, device="cpu"),
    # open_clip: its own causal text transformer, ViT with K class tokens (forward hooks)
    "open_clip_vit": lambda dirs: st_oblique.oblique_open_clip(dirs["open_clip"], num_tokens=K, token_dim=D, device="cpu"),
    # open_clip with a ResNet image tower: attention queries over the feature map
    "open_clip_resnet": lambda dirs: st_oblique.oblique_open_clip(
        dirs["open_clip"], num_tokens=K, token_dim=D, model_kwargs={"vision_cfg": TINY_RESNET}, device="cpu"
    ),
    # dual encoder: BERT text tower + timm ViT (K class tokens inserted before norm_pre) behind a ModalityRouter
    "timm_vit_dual": lambda dirs: st_oblique.oblique_dual_encoder(
        dirs["bert"], dirs["timm_vit"], num_tokens=K, token_dim=D, device="cpu"
    ),
    # dual encoder: BERT text tower + timm CNN (EfficientNet) feature map, attention queries
    "cnn_dual": lambda dirs: st_oblique.oblique_dual_encoder(
        dirs["bert"], dirs["timm_cnn"], num_tokens=K, token_dim=D, device="cpu"
    ),
    # late class tokens (token_source="class_attention", every family that offers it): the towers run unchanged and
    # K class tokens join after them in class-attention blocks inside the head
    "hf_clip_late": lambda dirs: st_oblique.oblique_clip(
        dirs["clip"], num_tokens=K, token_dim=D, token_source="class_attention", device="cpu"
    ),
    "open_clip_vit_late": lambda dirs: st_oblique.oblique_open_clip(
        dirs["open_clip"], num_tokens=K, token_dim=D, token_source="class_attention", device="cpu"
    ),
    "timm_vit_dual_late": lambda dirs: st_oblique.oblique_dual_encoder(
        dirs["bert"], dirs["timm_vit"], num_tokens=K, token_dim=D, text_token_source="class_attention",
        image_token_source="class_attention", device="cpu",
    ),
    "cnn_dual_late": lambda dirs: st_oblique.oblique_dual_encoder(
        dirs["bert"], dirs["timm_cnn"], num_tokens=K, token_dim=D, text_token_source="attention",
        image_token_source="class_attention", device="cpu",
    ),
}
"""Every tower family st-oblique builds, with the class tokens at the input and (``*_late``) late class tokens; the
BERT-like text model with late class tokens is tests/export/test_export_token_sources.py's (the converted clip-mtob
layout is tested in tests/clip_mtob)."""
LATE_FAMILIES = tuple(name for name in FAMILIES if name.endswith("_late"))
