"""Regime A of the topology study: LiT-style heads trained on cached frozen-tower token states.

Every arm is an :class:`st_oblique.ObliquePooling` with one head per modality (K=1 for the sphere arms) trained
with :class:`st_oblique.ObliqueContrastiveLoss` (with K=1 it is exactly CLIP's loss) on cached token states, and
evaluated with the evaluation package's metrics (``retrieval_scores`` / ``retrieval_metrics``,
``zeroshot_logits`` / ``classification_metrics``), i.e. the numbers ``zeroshot_retrieval`` and
``zeroshot_classification`` would give for a model made of the frozen towers and this head.

Example::

    arm = Arm.from_config("oblique16_fixed1", {"num_tokens": 16, "token_dim": 32, "token_source": "attention"})
    head, loss, history = train_head(arm, data, table, TrainConfig(epochs=20), seed=0, learning_rate=1e-3)
    metrics = evaluate_head(head, data, "test")
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evaluation.studies.splits import CaptionTable
from st_oblique import ObliqueContrastiveLoss, ObliquePooling, manifold
from st_oblique.evaluation.classification import classification_metrics, zeroshot_logits
from st_oblique.evaluation.retrieval import retrieval_metrics, retrieval_scores

RECALL_KEYS = tuple(f"{kind}_retrieval_recall@{k}" for kind in ("image", "text") for k in (1, 5, 10))


@dataclass(frozen=True)
class Arm:
    """One head design: K, d, where the K token states come from, and the logit scale.

    ``token_source="attention"``: K learned queries attend over the token states (1 query for a sphere arm);
    ``"split"``: the mean token state projected K times (the sphere's mean-pooling head when K=1);
    ``"class_attention"``: K class tokens read the token states through ``class_attention_layers`` CaiT
    class-attention blocks (late class tokens; width: the PCA width, random initialisation);
    ``"first"``: the text tower's K class tokens (``[CLS]`` tiled K times inside the frozen encoder, read from a
    tower cache computed with K class tokens), with ``image_token_source`` for the image tower (a CNN has no class
    token: ``"attention"``), as :func:`st_oblique.oblique_dual_encoder` builds them by default.
    """

    name: str
    num_tokens: int
    token_dim: int
    token_source: str = "attention"
    scale: float = 1.0
    learnable_scale: bool = False
    max_scale: float | None = None
    description: str = ""
    image_token_source: str | None = None
    class_attention_layers: int | None = None

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> Arm:
        return named_from_config(cls, name, config)

    def spec(self) -> dict[str, Any]:
        """The arm's part of a run specification (options added later are left out when unset, so the stored
        records of the arms that predate them keep their specification)."""
        return spec_without_unset(self, ("image_token_source", "class_attention_layers"))

    @property
    def text_class_tokens(self) -> int:
        """Class tokens inside the frozen text tower (K for ``"first"``, else 1)."""
        return self.num_tokens if self.token_source == "first" else 1

    @property
    def logit_range(self) -> float:
        """The largest logit ``scale * K`` (for a learnable scale: at its cap)."""
        scale = self.max_scale if self.learnable_scale and self.max_scale else self.scale
        return scale * self.num_tokens


def spec_without_unset(arm: Any, later_fields: Sequence[str]) -> dict[str, Any]:
    """``arm.__dict__`` without the ``later_fields`` that are None (see :meth:`Arm.spec`)."""
    return {key: value for key, value in arm.__dict__.items() if not (key in later_fields and value is None)}


def named_from_config(cls: type, name: str, config: Mapping[str, Any]) -> Any:
    """``cls(name=name, **config)`` for a dataclass, with an error naming the arm and any unknown key."""
    unknown = set(config) - {f for f in cls.__dataclass_fields__ if f != "name"}
    if unknown:
        raise ValueError(f"{cls.__name__} {name!r}: unknown keys {sorted(unknown)}.")
    return cls(name=name, **config)


@dataclass
class TrainConfig:
    """The budget and optimizer of one head (the same for every arm)."""

    epochs: int = 20
    batch_size: int = 128
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    log_every: int = 5


@dataclass
class LitData:
    """Cached (and possibly PCA-reduced) token states of everything regime A trains and evaluates on.

    Attributes:
        image_tokens: ``(N, L_img, H_img)`` image token states of the image-text pairs' images.
        text_tokens: ``(T, L, H_text)`` caption token states, ``text_mask`` ``(T, L)`` bool.
        captions: the captions of every image (caption ids number them in this order).
        caption_owner: ``(T,)`` the image of every caption; ``captions_of[i]``: caption ids of image i.
        splits: image indices per split (``train``, ``val``, ``test``).
        zs_image_tokens: ``(M, L_img, H_img)`` zero-shot images, ``zs_labels`` ``(M,)``.
        zs_prompt_tokens: ``(P, L, H_text)`` every class prompt, ``zs_prompt_mask``; ``zs_prompt_class``: ``(P,)``.
        classnames: the zero-shot class names.
    """

    image_tokens: Tensor
    text_tokens: Tensor
    text_mask: Tensor
    captions: list[list[str]]
    caption_owner: np.ndarray
    captions_of: list[list[int]]
    splits: dict[str, np.ndarray]
    zs_image_tokens: Tensor
    zs_labels: Tensor
    zs_prompt_tokens: Tensor
    zs_prompt_mask: Tensor
    zs_prompt_class: Tensor
    classnames: list[str]
    notes: dict[str, Any] = field(default_factory=dict)
    text_views: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = field(default_factory=dict)

    @property
    def widths(self) -> dict[str, int]:
        return {"image": self.image_tokens.shape[-1], "text": self.text_tokens.shape[-1]}

    def for_arm(self, arm: Arm) -> LitData:
        """The data an arm reads: for ``"first"`` arms the caption and prompt states of the text tower with K class
        tokens (``text_views[K]``: tokens, mask, prompt tokens, prompt mask), else these."""
        if arm.text_class_tokens == 1:
            return self
        if arm.text_class_tokens not in self.text_views:
            raise ValueError(
                f"Arm {arm.name!r} reads {arm.text_class_tokens} class tokens of the text tower, but the data has text "
                f"states for {sorted(self.text_views) or 'no'} class-token counts."
            )
        tokens, mask, prompt_tokens, prompt_mask = self.text_views[arm.text_class_tokens]
        return dataclasses.replace(
            self, text_tokens=tokens, text_mask=mask, zs_prompt_tokens=prompt_tokens, zs_prompt_mask=prompt_mask
        )


def build_head(arm: Arm, widths: Mapping[str, int]) -> ObliquePooling:
    """The arm's trainable head: st-oblique's ObliquePooling with one head per modality."""
    sources = dict.fromkeys(widths, arm.token_source)
    if arm.image_token_source is not None:
        sources["image"] = arm.image_token_source
    late = {} if arm.class_attention_layers is None else {"class_attention_layers": arm.class_attention_layers}
    return ObliquePooling(
        dict(widths),
        num_tokens=arm.num_tokens,
        token_dim=arm.token_dim,
        token_source=sources,
        **late,
    )


def build_loss(head: ObliquePooling, arm: Arm) -> ObliqueContrastiveLoss:
    """The arm's loss: st-oblique's ObliqueContrastiveLoss (CLIP's symmetric InfoNCE when K=1)."""
    return ObliqueContrastiveLoss(
        head,
        scale=arm.scale,
        learnable_scale=arm.learnable_scale,
        max_scale=arm.max_scale if arm.learnable_scale else None,
    )


def fit_pca(tokens: Tensor, mask: Tensor | None, dim: int) -> tuple[Tensor, Tensor, float]:
    """Mean ``(H,)``, the top-``dim`` principal directions ``(H, dim)`` of token states, and the variance kept."""
    flat = tokens.float().reshape(-1, tokens.shape[-1])
    if mask is not None:
        flat = flat[mask.reshape(-1)]
    mean = flat.mean(0)
    covariance = torch.cov((flat - mean).T.double())
    values, vectors = torch.linalg.eigh(covariance)
    order = values.argsort(descending=True)
    kept = float(values[order[:dim]].sum() / values.sum())
    return mean, vectors[:, order[:dim]].float(), kept


def apply_pca(tokens: Tensor, mean: Tensor, components: Tensor, chunk: int = 256) -> Tensor:
    """Token states projected on the principal directions: ``(..., H) -> (..., dim)`` float32."""
    return torch.cat([(part.float() - mean) @ components for part in tokens.split(chunk)])


def embed(
    head: ObliquePooling, modality: str, tokens: Tensor, mask: Tensor | None = None, batch_size: int = 512
) -> Tensor:
    """Flat ``(N, K*d)`` embeddings of cached token states through the head (no gradients)."""
    outputs = []
    head.eval()
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            features = _features(
                modality, tokens[start : start + batch_size], None if mask is None else mask[start : start + batch_size]
            )
            outputs.append(head(features)["sentence_embedding"])
    return torch.cat(outputs)


def _features(modality: str, tokens: Tensor, mask: Tensor | None) -> dict[str, Any]:
    features: dict[str, Any] = {"modality": modality}
    if mask is not None:
        length = int(mask.sum(1).max())
        tokens, mask = tokens[:, :length], mask[:, :length]
        features["attention_mask"] = mask.long()
    features["token_embeddings"] = tokens.float()
    return features


def epoch_batches(
    images: np.ndarray, table: CaptionTable, batch_size: int, seed: int, epoch: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (image ids, caption ids) batches: every training image once, with one of its captions.

    Depends only on the seed, the epoch and the caption table, so every arm of a seed sees the same batches
    (paired comparisons). One caption per image per epoch keeps an image's other captions out of its batch,
    where they would be false negatives. The last incomplete batch is dropped.
    """
    rng = np.random.default_rng([seed, epoch])
    order = images[rng.permutation(len(images))]
    picks = rng.integers(0, 1 << 30, size=len(order))
    captions = np.array(
        [
            table.caption_ids[int(image)][pick % len(table.caption_ids[int(image)])]
            for image, pick in zip(order, picks, strict=True)
        ]
    )
    return [
        (order[start : start + batch_size], captions[start : start + batch_size])
        for start in range(0, len(order) - batch_size + 1, batch_size)
    ]


def train_head(
    arm: Arm,
    data: LitData,
    table: CaptionTable,
    config: TrainConfig,
    seed: int,
    learning_rate: float,
    scale_learning_rate: float | None = None,
    *,
    objective_for: Callable[[ObliquePooling], tuple[Callable[[Tensor, Tensor], Tensor], Any]] | None = None,
) -> tuple[ObliquePooling, ObliqueContrastiveLoss, list[dict[str, float]]]:
    """Train the arm's head on the training images of ``table`` (AdamW, linear warmup then cosine decay).

    The learnable scale, if any, gets no weight decay (as st-oblique's trainer integration does) and the learning
    rate ``scale_learning_rate`` (default: the heads' ``learning_rate``, as in CLIP).

    ``objective_for(head) -> (objective, loss)`` replaces the arm's loss by another objective of the image and text
    embeddings (e.g. a nested-token one); ``loss`` holds the scale that is logged and trained.

    Returns:
        The trained head, its loss (holding the learned scale) and the training history (step, loss, scale).
    """
    torch.manual_seed(seed)
    head = build_head(arm, data.widths)
    if objective_for is None:
        loss = build_loss(head, arm)

        def objective(images: Tensor, texts: Tensor) -> Tensor:
            return loss.compute_loss_from_embeddings([images, texts])
    else:
        objective, loss = objective_for(head)
    train_images = np.array(sorted(table.caption_ids))
    steps_per_epoch = len(train_images) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={config.batch_size} is larger than the {len(train_images)} training images.")
    total_steps = steps_per_epoch * config.epochs
    # The scale (and bias) are the head's own parameters: their group is the scale group below.
    scale_parameters = list(loss.temperature_parameters().values())
    weights = [p for p in head.parameters() if all(p is not scale for scale in scale_parameters)]
    decay = [p for p in weights if p.ndim >= 2]
    no_decay = [p for p in weights if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "lr": learning_rate},
        {"params": no_decay, "weight_decay": 0.0, "lr": learning_rate},
    ]
    if scale_parameters:
        groups.append({"params": scale_parameters, "weight_decay": 0.0, "lr": scale_learning_rate or learning_rate})
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, round(config.warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup, total_steps))
    history = [{"step": 0, "loss": float("nan"), "scale": loss.scale}]
    step = 0
    head.train()
    for epoch in range(config.epochs):
        for image_ids, caption_ids in epoch_batches(train_images, table, config.batch_size, seed, epoch):
            images = head(_features("image", data.image_tokens[image_ids], None))["sentence_embedding"]
            texts = head(_features("text", data.text_tokens[caption_ids], data.text_mask[caption_ids]))[
                "sentence_embedding"
            ]
            value = objective(images, texts)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % config.log_every == 0 or step == total_steps:
                history.append({"step": step, "loss": value.item(), "scale": loss.scale})
    loss.logit_scale.apply_cap()
    return head, loss, history


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def evaluate_head(head: ObliquePooling, data: LitData, split: str, zero_shot: bool = True) -> dict[str, float]:
    """Retrieval on a split's images and all their (clean) captions, and zero-shot classification.

    Returns CLIP_benchmark's keys (``image_retrieval_recall@k``: text -> image, ``text_retrieval_recall@k``:
    image -> text, ``acc1``, ``acc5``, ``mean_per_class_recall``) plus ``mean_recall``, the mean of the six
    recalls.
    """
    num_tokens = head.num_tokens
    images = data.splits[split]
    caption_ids = np.array([caption for image in images for caption in data.captions_of[int(image)]])
    owner = {int(image): position for position, image in enumerate(images)}
    caption_image_index = torch.tensor([owner[int(data.caption_owner[c])] for c in caption_ids])
    image_embeddings = embed(head, "image", data.image_tokens[images])
    text_embeddings = embed(head, "text", data.text_tokens[caption_ids], data.text_mask[caption_ids])
    scores = retrieval_scores(text_embeddings, image_embeddings, num_tokens)
    metrics = retrieval_metrics(scores, caption_image_index)
    metrics["mean_recall"] = float(np.mean([metrics[key] for key in RECALL_KEYS]))
    if zero_shot:
        prompts = embed(head, "text", data.zs_prompt_tokens, data.zs_prompt_mask)
        classifier = torch.stack(
            [
                manifold.token_mean(prompts[data.zs_prompt_class == label], dim=0, num_tokens=num_tokens)
                for label in range(len(data.classnames))
            ]
        )
        logits = zeroshot_logits(embed(head, "image", data.zs_image_tokens), classifier, num_tokens)
        metrics.update(classification_metrics(logits, data.zs_labels, len(data.classnames)))
    return metrics


def run_arm(
    arm: Arm,
    data: LitData,
    table: CaptionTable,
    config: TrainConfig,
    seed: int,
    learning_rate: float,
    scale_learning_rate: float | None,
    splits: tuple[str, ...],
) -> dict[str, Any]:
    """Train one head and evaluate it on ``splits``: the record written for one run."""
    start = time.monotonic()
    data = data.for_arm(arm)
    head, loss, history = train_head(arm, data, table, config, seed, learning_rate, scale_learning_rate)
    train_seconds = time.monotonic() - start
    metrics = {split: evaluate_head(head, data, split, zero_shot=split == "test") for split in splits}
    return {
        "arm": asdict(arm),
        "metrics": metrics,
        "final_scale": loss.scale,
        "recorded_logit_scale": head.logit_scale,
        "noise_fraction_realized": table.noise_fraction,
        "history": history,
        "train_seconds": train_seconds,
        "seconds": time.monotonic() - start,
        "num_parameters": sum(p.numel() for p in head.parameters()),
    }
