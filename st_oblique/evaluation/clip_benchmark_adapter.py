"""Run CLIP_benchmark's (or open_clip's) own evaluation code on a SentenceTransformer.

CLIP_benchmark's metric functions expect an open_clip-style model: ``encode_image(pixel_batch)``,
``encode_text(token_batch)``, a ``transform`` (PIL image -> tensor) for its DataLoader and a ``tokenizer``
(list of strings -> batch with ``.to(device)``). :class:`CLIPBenchmarkModel` presents any image-text
SentenceTransformer that way, so CLIP_benchmark's code can be run unchanged on the same model as this
package's harness: it is how the harness is checked against CLIP_benchmark (metric parity at K=1, speed).

Run CLIP_benchmark's ``evaluate`` inside ``with clip_benchmark_numpy2_fix():`` (from :mod:`st_oblique._compat`,
re-exported here): clip-benchmark 1.6.2's accuracy fails on NumPy >= 2.4.

Note that CLIP_benchmark normalizes whole embeddings, so for oblique models with K > 1 its numbers differ
from this package's token-wise protocol (that difference is the reason the harness exists).

Example::

    from clip_benchmark.metrics import zeroshot_classification as cb
    from st_oblique.evaluation.clip_benchmark_adapter import CLIPBenchmarkModel, clip_benchmark_numpy2_fix

    adapter = CLIPBenchmarkModel(model)
    loader = DataLoader(dataset_with_transform(adapter.transform), batch_size=64)   # yields (pixels, labels)
    with clip_benchmark_numpy2_fix():
        metrics = cb.evaluate(adapter, loader, adapter.tokenizer, classnames, templates, device="cpu", amp=False)
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import batch_to_device
from torch import Tensor, nn

from st_oblique._compat import clip_benchmark_numpy2_fix  # hook 12: CLIP_benchmark's accuracy on NumPy 2
from st_oblique.data.images import load_image

__all__ = ["CLIPBenchmarkModel", "clip_benchmark_numpy2_fix"]


class _TextBatch(dict):
    """Preprocessed texts that CLIP_benchmark can move with ``.to(device)``."""

    def to(self, device: str | torch.device) -> _TextBatch:
        return _TextBatch(batch_to_device(self, device))


class CLIPBenchmarkModel(nn.Module):
    """An open_clip-style view of an image-text SentenceTransformer (shares its weights; no copy).

    Attributes:
        model: the wrapped SentenceTransformer.
    """

    def __init__(self, model: SentenceTransformer) -> None:
        super().__init__()
        if not model.supports("image"):
            raise ValueError(f"CLIPBenchmarkModel needs an image-text model; this one handles {model.modalities}.")
        self.model = model
        # Which feature carries the pixels (and which constant entries go with it) is fixed by the model; find it
        # once here, since transform() runs in DataLoader workers whose state the main process never sees.
        probe = model.preprocess([Image.new("RGB", (16, 16))])
        self._image_key, _ = self._split(probe)
        self._image_extras = {key: value for key, value in probe.items() if key != self._image_key}

    def transform(self, image: Any) -> Tensor:
        """The model's preprocessing of one image (PIL image, path, bytes or array) as a tensor without batch axis."""
        return self.model.preprocess([load_image(image)])[self._image_key][0]

    @staticmethod
    def _split(features: dict[str, Any]) -> tuple[str, Tensor]:
        tensors = {
            key: value for key, value in features.items() if isinstance(value, Tensor) and value.shape[:1] == (1,)
        }
        if len(tensors) != 1:
            raise ValueError(
                "CLIPBenchmarkModel supports image inputs with one tensor (e.g. pixel_values); this model's "
                f"preprocessing gives {sorted(tensors)}."
            )
        return next(iter(tensors.items()))

    def tokenizer(self, texts: list[str]) -> _TextBatch:
        """The model's preprocessing of a list of texts."""
        return _TextBatch(self.model.preprocess(list(texts)))

    def encode_image(self, pixels: Tensor) -> Tensor:
        """``(B, D)`` image embeddings from a batch of :meth:`transform` outputs."""
        features = {self._image_key: pixels.to(self.model.device), **self._image_extras}
        return self.model(features)["sentence_embedding"]

    def encode_text(self, texts: _TextBatch) -> Tensor:
        """``(B, D)`` text embeddings from a :meth:`tokenizer` batch."""
        return self.model(dict(texts))["sentence_embedding"]
