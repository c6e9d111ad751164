"""Token outputs of the frozen towers, computed once through st-oblique's own dual encoder and cached on disk.

In regime A the towers never change, so their token states are computed once per input: the image tower
(``ImageClassTokenTransformer`` on EfficientNet-Lite0: a ``(1280, 7, 7)`` map flattened to 49 tokens) and the
text tower (``ClassTokenTransformer`` on all-MiniLM-L6-v2: ``(L, 384)`` token states and the attention mask), both
inside :func:`st_oblique.oblique_dual_encoder`. The cache is keyed by a fingerprint of the tower folders and the
inputs, so changing either recomputes it; a cache written halfway is never read (files are renamed into place).

Example::

    cache = TowerCache(text_model, image_model, cache_dir="~/.cache/st_oblique/topology")
    image_tokens = cache.image_tokens("flickr8k_1k", images)          # (N, 49, 1280) float16
    text_tokens, mask = cache.text_tokens("flickr8k_1k", captions)    # (T, L, 384) float16, (T, L) bool
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/st_oblique/topology").expanduser()


class TowerCache:
    """Frozen-tower token states on disk, computed with st-oblique's dual encoder on first use.

    Args:
        text_model: folder (or Hub id) of the text tower, e.g. ``../shared/weights/all-MiniLM-L6-v2``.
        image_model: folder (or Hub id) of the image tower, e.g. ``../shared/weights/tf_efficientnet_lite0``.
        cache_dir: where the tensors go (default ``~/.cache/st_oblique/topology``); outside the repository.
        batch_size: inputs per forward pass.
        text_class_tokens: K class tokens inside the text tower (``[CLS]`` tiled K times, the states of the first K
            positions are its class tokens); 1: the tower as published.
    """

    def __init__(
        self,
        text_model: str,
        image_model: str,
        cache_dir: str | Path | None = None,
        batch_size: int = 64,
        text_class_tokens: int = 1,
    ) -> None:
        self.text_model = str(text_model)
        self.image_model = str(image_model)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR
        self.batch_size = batch_size
        self.text_class_tokens = text_class_tokens
        self._model = None

    @property
    def model(self):
        """The dual encoder whose towers produce the cached states (its cheap 'split' head is not used)."""
        if self._model is None:
            import st_oblique

            self._model = st_oblique.oblique_dual_encoder(
                self.text_model,
                self.image_model,
                num_tokens=self.text_class_tokens,
                token_dim=8,
                text_token_source="first" if self.text_class_tokens > 1 else "split",
                image_token_source="split",
            ).eval()
        return self._model

    def image_tokens(self, name: str, images: Sequence[Any]) -> Tensor:
        """``(N, L_img, H_img)`` float16 token states of ``images`` (anything the evaluation package reads)."""
        path = self._path(name, "image", [self.image_model], _image_fingerprint(images))
        if path.is_file():
            return torch.load(path)["tokens"]
        from st_oblique.data.images import load_image

        chunks = []
        with torch.inference_mode():
            for start in tqdm(range(0, len(images), self.batch_size), desc=f"Image tower: {name}"):
                batch = [load_image(images[index]) for index in range(start, min(start + self.batch_size, len(images)))]
                chunks.append(self._tokens(batch)[0].half())
        tokens = torch.cat(chunks)
        _atomic_save({"tokens": tokens}, path)
        return tokens

    def text_tokens(self, name: str, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(T, L, H_text)`` float16 token states (right-padded to the longest text) and the ``(T, L)`` mask."""
        kind = "text" if self.text_class_tokens == 1 else f"text-{self.text_class_tokens}-class-tokens"
        path = self._path(name, kind, [self.text_model], _text_fingerprint(texts))
        if path.is_file():
            saved = torch.load(path)
            return saved["tokens"], saved["mask"]
        states, masks = [], []
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), self.batch_size), desc=f"Text tower: {name}"):
                tokens, mask = self._tokens(list(texts[start : start + self.batch_size]))
                states.append(tokens.half())
                masks.append(mask.bool())
        width = max(state.shape[1] for state in states)
        tokens = torch.cat([torch.nn.functional.pad(state, (0, 0, 0, width - state.shape[1])) for state in states])
        mask = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for m in masks])
        _atomic_save({"tokens": tokens, "mask": mask}, path)
        return tokens, mask

    def _tokens(self, inputs: list[Any]) -> tuple[Tensor, Tensor | None]:
        features = self.model.preprocess(inputs)
        output = self.model(features)
        return output["token_embeddings"].float(), output.get("attention_mask")

    def _path(self, name: str, kind: str, models: list[str], inputs: str) -> Path:
        key = hashlib.sha256(json.dumps([kind, [_model_fingerprint(m) for m in models], inputs]).encode()).hexdigest()
        return self.cache_dir / f"{name}-{kind}-{key[:16]}.pt"


def _model_fingerprint(model: str) -> list:
    """Content hashes of a local model's weight and config files (a changed checkpoint invalidates the cache).

    Contents, not paths or modification times: the same weights copied or re-provisioned elsewhere keep their cache.
    """
    folder = Path(model)
    if not folder.is_dir():
        return [model]
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    return [folder.name, [(p.relative_to(folder).as_posix(), _file_digest(p)) for p in files]]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _text_fingerprint(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def _image_fingerprint(images: Sequence[Any]) -> str:
    digest = hashlib.sha256()
    for index in range(len(images)):
        item = images[index]
        digest.update(item if isinstance(item, (bytes, bytearray)) else repr(item).encode())
    return digest.hexdigest()


def _atomic_save(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    torch.save(obj, partial)
    os.replace(partial, path)
