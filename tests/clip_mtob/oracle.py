"""Helpers of the clip-mtob tests: the paper's official code (../shared/reference/clip-mtob, MIT) as an oracle.

The official modules are imported from ../shared, never copied. Their ``CLIP`` is built small (2 layers, width 64,
patch 32) with random weights, including the two parameters it creates with ``torch.empty``, perturbed so that no
LayerNorm is the identity, and saved as a plain ``state_dict`` like the release files.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

SMALL = {
    "vision_layers": 2,
    "vision_width": 64,
    "vision_patch_size": 32,
    "transformer_width": 64,
    "transformer_layers": 2,
}
CONTEXT, VOCAB_SIZE, IMAGE_SIZE = 77, 30522, 224
VARIANTS = {"mtob": (16, 8), "ref": (1, 16)}  # K, d (the release: 16 x 32 and 1 x 512)
TOLERANCE = 1e-5

TRICKY_TEXTS = [
    "a photo of a cat",
    "Café crème brûlée à Noël, ÉCOLE Ångström naïve façade",
    "你好，世界！東京タワーの写真",
    "한국어 문장과 English",
    "🙂🐱 a cat 👍🏽 family 👨‍👩‍👧",
    "tab\tnew\nline\r zero\u200bwidth\u00a0nbsp",
    "don't stop-believing... 3.14 $5 #tag @user",
    "x[SEP]y and [CLS] alone",
    "a" * 150,
    " ".join(["the quick brown fox jumps over the lazy dog"] * 12),  # > 77 tokens: truncated like the official code
]


@dataclass
class Official:
    """The official code: its ``run_example`` module (the ``CLIPWarper`` with the release's tokenizer and evaluation
    transform) and the two model modules it imports."""

    root: Path
    run_example: ModuleType

    @property
    def mtob(self) -> ModuleType:
        return self.run_example.modeling_clip_helper_mtob

    @property
    def ref(self) -> ModuleType:
        return self.run_example.modeling_clip_helper_ref

    @property
    def vocab(self) -> Path:
        return self.root / "ERNIE-BASE-EN-2.0"

    @property
    def transform(self):
        """``CLIPWarper.transform_test``: resize 224 bicubic, center crop 224, RGB, CLIP mean/std."""
        return self.run_example.CLIPWarper.transform_test

    def token_ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``CLIPWarper.tokenizer`` (``BertTokenizerWarper(max_len=77)``) on each text, stacked as in ``forward``."""
        tokenizer = self.run_example.CLIPWarper.tokenizer
        encoded = [tokenizer(text) for text in texts]
        ids = torch.from_numpy(np.stack([item["input_ids"] for item in encoded]))
        mask = torch.from_numpy(np.stack([item["attention_mask"] for item in encoded]))
        return ids, mask


def build_official(official: Official, variant: str, *, seed: int = 0, **sizes) -> nn.Module:
    """The official CLIP of ``variant`` with random weights: the ``torch.empty`` parameters initialised, then every
    parameter perturbed (so LayerNorms are not the identity and a swapped weight shows)."""
    num_tokens, token_dim = VARIANTS[variant]
    arguments = {**SMALL, "transformer_heads": 1, **sizes}
    module = official.mtob if variant == "mtob" else official.ref
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nn.TransformerEncoder's nested-tensor notice
        model = module.CLIP(
            embed_dim=token_dim,
            image_resolution=IMAGE_SIZE,
            output_dim=token_dim,
            n_class_tokens=num_tokens,
            context_length=CONTEXT,
            vocab_size=VOCAB_SIZE,
            **arguments,
        )
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.positional_embedding.normal_(std=0.01, generator=generator)
        model.text_projection.normal_(std=model.text_projection.shape[0] ** -0.5, generator=generator)
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def official_embeddings(model: nn.Module, official: Official, *, texts=None, images=None) -> torch.Tensor:
    """Per-token L2-normalized ``encode_text`` / ``encode_image`` of the official model, ``(B, K, d)``."""
    with torch.no_grad():
        if texts is not None:
            ids, mask = official.token_ids(texts)
            features = model.encode_text(ids, mask)
        else:
            features = model.encode_image(torch.stack([official.transform(image) for image in images]))
    return features / features.norm(dim=-1, keepdim=True)


def max_diff(name: str, actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double()).abs().max().item()
    print(f"\n{name}: max abs diff {diff:.3e}")
    return diff
