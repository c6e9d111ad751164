"""Regime C of the topology study: dual encoders trained from scratch on synthetic compositional scenes.

Both towers are tiny transformers with K class tokens inside (:mod:`evaluation.studies.scratch_towers`), trained
with st-oblique's :class:`~st_oblique.ObliqueContrastiveLoss` on the scenes of
:mod:`evaluation.studies.synthetic_scenes` (captions clean or with a fraction swapped between images by
:func:`evaluation.studies.splits.noisy_caption_table`). Every arm of a seed starts from the same tower weights and
sees the same batches (:func:`evaluation.studies.lit_heads.epoch_batches`).

Metrics of one run:

- retrieval on held-out images (every test scene distinct, 3 captions each): the six recalls and their mean;
- zero-shot classification of held-out compositions with prompt templates never seen in training: shape and
  colour of single objects, the spatial relation of an object pair;
- what the tokens learn (K > 1; for K = 1 the vector cut into 16 chunks, as a reference): the token-collapse
  diagnostics (:func:`st_oblique.diagnostics.token_collapse.token_collapse`) and, per token, a linear probe (ridge
  classifier) for each scene attribute: which attribute each token predicts best.

Example::

    data = prepare_data(config)                                  # rendered once per process
    record = run_scratch_arm(arm, data, towers, train, seed=0, learning_rate=1e-3, noise=0.3,
                             noise_seed=1234, splits=("val", "test"))
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evaluation.studies.lit_heads import RECALL_KEYS, _lr_factor, epoch_batches
from evaluation.studies.scratch_towers import (
    ModelParts,
    ScratchArm,
    TowerConfig,
    build_loss,
    build_model,
    pixels,
    tokenize,
    write_random_towers,
)
from evaluation.studies.splits import CaptionTable, noisy_caption_table
from evaluation.studies.synthetic_scenes import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    SceneConfig,
    SceneSet,
    SceneWorld,
    colour_prompts,
    relation_prompts,
    shape_prompts,
)
from st_oblique import manifold
from st_oblique.diagnostics.token_collapse import token_collapse
from st_oblique.evaluation.classification import classification_metrics, zeroshot_logits
from st_oblique.evaluation.retrieval import retrieval_metrics, retrieval_scores

PROBE_ATTRIBUTES = ("shape", "colour", "size", "position", "background", "relation")
PROBE_CLASSES = {
    "shape": len(SHAPES),
    "colour": len(COLOURS),
    "size": len(SIZES),
    "position": len(POSITIONS),
    "background": len(BACKGROUNDS),
    "relation": len(RELATIONS),
}


@dataclass
class ScratchTrainConfig:
    """The budget and optimizer (the same for every arm)."""

    epochs: int = 8
    batch_size: int = 128
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    log_every: int = 16


@dataclass
class ScratchData:
    """The rendered world: training scenes, validation and test retrieval sets, zero-shot and probe sets."""

    train: SceneSet
    val: SceneSet
    test: SceneSet
    zs_objects: SceneSet
    zs_relations: SceneSet
    probe_objects: SceneSet
    probe_pairs: SceneSet
    notes: dict[str, Any]


def prepare_data(config: Mapping[str, Any]) -> ScratchData:
    """Render every set of regime C from the config's ``world`` and ``data`` sections (a few seconds)."""
    world = SceneWorld(SceneConfig.from_dict(config.get("world", {})))
    sizes, seed = config["data"]["sizes"], config["data"]["seed"]
    start = time.monotonic()
    train = world.sample(sizes["train"], seed=seed, split="train")
    val = world.sample(sizes["val"], seed=seed, split="val", unique=True)
    test = world.sample(sizes["test"], seed=seed, split="test", unique=True)
    zs_objects = world.zero_shot_objects(sizes["zero_shot"], seed=seed)
    zs_relations = world.zero_shot_relations(sizes["zero_shot"], seed=seed)
    single = SceneWorld(
        SceneConfig.from_dict({**config.get("world", {}), "object_counts": [1], "object_count_probabilities": [1.0]})
    )
    pairs = SceneWorld(
        SceneConfig.from_dict({**config.get("world", {}), "object_counts": [2], "object_count_probabilities": [1.0]})
    )
    probe_objects = single.sample(sizes["probe"], seed=seed, split="probe objects")
    probe_pairs = pairs.sample(sizes["probe"], seed=seed, split="probe pairs")
    train_keys = {scene.key() for scene in train.scenes}
    notes = {
        "sizes": {
            name: len(s)
            for name, s in (
                ("train", train),
                ("val", val),
                ("test", test),
                ("zero_shot_objects", zs_objects),
                ("zero_shot_relations", zs_relations),
                ("probe_objects", probe_objects),
                ("probe_pairs", probe_pairs),
            )
        },
        "held_out_compositions": [list(pair) for pair in sorted(world.held_out)],
        "test_scenes_also_in_train": sum(scene.key() in train_keys for scene in test.scenes),
        "distinct_train_captions": len({c for group in train.captions for c in group}),
        "render_seconds": time.monotonic() - start,
    }
    return ScratchData(train, val, test, zs_objects, zs_relations, probe_objects, probe_pairs, notes)


@functools.cache
def cached_data(config_json: str) -> ScratchData:
    """:func:`prepare_data` once per process and config (worker processes render their own copy)."""
    return prepare_data(json.loads(config_json))


def flat_captions(scenes: SceneSet) -> tuple[list[str], np.ndarray]:
    texts = [caption for group in scenes.captions for caption in group]
    owners = np.array([index for index, group in enumerate(scenes.captions) for _ in group])
    return texts, owners


def embed_images(parts: ModelParts, images: np.ndarray, batch_size: int = 256) -> Tensor:
    parts.train(False)
    with torch.inference_mode():
        return torch.cat(
            [parts.encode_images(pixels(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        )


def embed_texts(parts: ModelParts, texts: Sequence[str], batch_size: int = 256) -> Tensor:
    parts.train(False)
    tokens = tokenize(parts.text, list(texts))
    with torch.inference_mode():
        return torch.cat(
            [
                parts.encode_texts({key: value[i : i + batch_size] for key, value in tokens.items()})
                for i in range(0, len(texts), batch_size)
            ]
        )


def train_model(
    arm: ScratchArm,
    data: ScratchData,
    towers: TowerConfig,
    table: CaptionTable,
    config: ScratchTrainConfig,
    seed: int,
    learning_rate: float,
) -> tuple[ModelParts, Any, list[dict[str, float]]]:
    """Train the arm's dual encoder from scratch (AdamW, linear warmup then cosine, as regime A's heads)."""
    with tempfile.TemporaryDirectory(prefix="st-oblique-regime-c-") as folder:
        folders = write_random_towers(folder, towers, seed)
        parts = build_model(arm, folders, seed)
    loss = build_loss(parts.model, arm)
    texts, _ = flat_captions(data.train)
    tokens = tokenize(parts.text, texts)
    images = pixels(data.train.images)
    train_images = np.array(sorted(table.caption_ids))
    steps_per_epoch = len(train_images) // config.batch_size
    total = steps_per_epoch * config.epochs
    # The scale (and bias) are parameters of the model's ObliquePooling: their group is the scale group below.
    scale_parameters = list(loss.temperature_parameters().values())
    parameters = [p for p in parts.parameters() if all(p is not scale for scale in scale_parameters)]
    groups = [
        {"params": [p for p in parameters if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
    ]
    if scale_parameters:
        groups.append({"params": scale_parameters, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, round(config.warmup_fraction * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup, total))
    torch.manual_seed(seed)
    history = [{"step": 0, "loss": float("nan"), "scale": loss.scale}]
    step = 0
    parts.train(True)
    for epoch in range(config.epochs):
        for image_ids, caption_ids in epoch_batches(train_images, table, config.batch_size, seed, epoch):
            image_embeddings = parts.encode_images(images[image_ids])
            text_embeddings = parts.encode_texts({key: value[caption_ids] for key, value in tokens.items()})
            value = loss.compute_loss_from_embeddings([image_embeddings, text_embeddings])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            scheduler.step()
            loss.logit_scale.apply_cap()
            step += 1
            if step % config.log_every == 0 or step == total:
                history.append({"step": step, "loss": value.item(), "scale": loss.scale})
    return parts, loss, history


def retrieval(parts: ModelParts, scenes: SceneSet, num_tokens: int) -> dict[str, float]:
    """The six recalls and their mean on a set of distinct scenes and all their captions."""
    texts, owners = flat_captions(scenes)
    scores = retrieval_scores(embed_texts(parts, texts), embed_images(parts, scenes.images), num_tokens)
    metrics = retrieval_metrics(scores, torch.as_tensor(owners))
    metrics["mean_recall"] = float(np.mean([metrics[key] for key in RECALL_KEYS]))
    return metrics


def _classifier(parts: ModelParts, prompts: list[list[str]], num_tokens: int) -> Tensor:
    embeddings = embed_texts(parts, [p for group in prompts for p in group])
    chunks = torch.split(embeddings, [len(group) for group in prompts])
    return torch.stack([manifold.token_mean(chunk, dim=0, num_tokens=num_tokens) for chunk in chunks])


def zero_shot(parts: ModelParts, data: ScratchData, num_tokens: int) -> dict[str, float]:
    """Shape, colour (single held-out objects) and relation (object pairs) accuracy with unseen templates."""
    images = embed_images(parts, data.zs_objects.images)
    metrics = {}
    for name, prompts, labels in (
        ("shape", shape_prompts(), data.zs_objects.extra["shape"]),
        ("colour", colour_prompts(), data.zs_objects.extra["colour"]),
    ):
        logits = zeroshot_logits(images, _classifier(parts, prompts, num_tokens), num_tokens)
        metrics[f"zs_{name}_acc1"] = classification_metrics(logits, torch.as_tensor(labels), len(prompts))["acc1"]
    pair_images = embed_images(parts, data.zs_relations.images)
    per_scene = [relation_prompts(scene) for scene in data.zs_relations.scenes]
    texts = [p for prompts in per_scene for group in prompts for p in group]
    templates = len(per_scene[0][0])
    prompt_embeddings = embed_texts(parts, texts).reshape(len(per_scene), len(RELATIONS), templates, -1)
    classes = manifold.token_mean(prompt_embeddings, dim=2, num_tokens=num_tokens)  # (N, 4, K*d)
    image_tokens = manifold.project(manifold.to_tokens(pair_images.float(), num_tokens))  # (N, K, d)
    class_tokens = manifold.to_tokens(classes.float(), num_tokens)  # (N, 4, K, d)
    logits = torch.einsum("nkd,nckd->nc", image_tokens, class_tokens)
    labels = torch.as_tensor(data.zs_relations.extra["relation"])
    metrics["zs_relation_acc1"] = float((logits.argmax(1) == labels).float().mean())
    metrics["zs_mean_acc1"] = float(np.mean([metrics[f"zs_{n}_acc1"] for n in ("shape", "colour", "relation")]))
    return metrics


def probe_labels(scenes: SceneSet, attributes: Sequence[str]) -> dict[str, np.ndarray]:
    lookup = {
        "shape": SHAPES,
        "colour": COLOURS,
        "size": SIZES,
        "position": POSITIONS,
        "background": BACKGROUNDS,
        "relation": RELATIONS,
    }
    labels = {}
    for attribute in attributes:
        if attribute == "background":
            labels[attribute] = np.array([BACKGROUNDS.index(s.background) for s in scenes.scenes])
        elif attribute == "position":
            labels[attribute] = np.array([POSITIONS.index(s.position) for s in scenes.scenes])
        elif attribute == "relation":
            labels[attribute] = np.array([RELATIONS.index(s.relation) for s in scenes.scenes])
        else:
            labels[attribute] = np.array(
                [lookup[attribute].index(getattr(s.objects[0], attribute)) for s in scenes.scenes]
            )
    return labels


def ridge_probe_accuracy(features: Tensor, labels: np.ndarray, num_classes: int, ridge: float = 1e-2) -> float:
    """Held-out accuracy of a ridge (one-hot least-squares) classifier: first half fits, second half scores."""
    x = features.double()
    half = x.shape[0] // 2
    mean, std = x[:half].mean(0), x[:half].std(0).clamp_min(1e-6)
    x = torch.cat([(x - mean) / std, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
    y = torch.nn.functional.one_hot(torch.as_tensor(labels), num_classes).double()
    a, b = x[:half], y[:half]
    weights = torch.linalg.solve(a.T @ a + ridge * half * torch.eye(a.shape[1], dtype=x.dtype), a.T @ b)
    predicted = (x[half:] @ weights).argmax(1)
    return float((predicted == torch.as_tensor(labels[half:])).double().mean())


def token_probes(parts: ModelParts, data: ScratchData, num_tokens: int, token_dim: int) -> dict[str, Any]:
    """Per image token (K=1: per 32-dim chunk of the one vector), the probe accuracy of every attribute.

    Single-object scenes give shape, colour, size, position and background; object pairs give the relation.
    Accuracies are also given normalized: ``(acc - chance) / (1 - chance)``.
    """
    views = 16 if num_tokens == 1 else num_tokens
    width = (num_tokens * token_dim) // views
    results: dict[str, list[float]] = {}
    full: dict[str, float] = {}
    for scenes, attributes in (
        (data.probe_objects, ("shape", "colour", "size", "position", "background")),
        (data.probe_pairs, ("relation",)),
    ):
        embeddings = embed_images(parts, scenes.images).reshape(len(scenes), views, width)
        for attribute, labels in probe_labels(scenes, attributes).items():
            classes = PROBE_CLASSES[attribute]
            results[attribute] = [ridge_probe_accuracy(embeddings[:, k], labels, classes) for k in range(views)]
            full[attribute] = ridge_probe_accuracy(embeddings.reshape(len(scenes), -1), labels, classes)
    normalized = {
        attribute: [(acc - 1 / PROBE_CLASSES[attribute]) / (1 - 1 / PROBE_CLASSES[attribute]) for acc in accs]
        for attribute, accs in results.items()
    }
    return {
        "views": "tokens" if num_tokens > 1 else "16 chunks of the one vector",
        "accuracy": results,
        "normalized": normalized,
        "full_embedding_accuracy": full,
        "specialization": specialization(normalized),
    }


def specialization(normalized: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """How differently the tokens (views) encode the attributes.

    - ``best_attribute``: per token, the attribute with the highest normalized probe accuracy *relative to the
      attribute's mean over tokens* (which attribute the token is best at compared with the other tokens);
    - ``distinct_best``: how many different attributes are some token's best;
    - ``spread``: per attribute, max − min normalized accuracy over tokens; ``mean_spread``: their mean (0 when
      every token encodes every attribute equally: no specialization);
    - ``relative_sd``: mean over attributes of the sd over tokens / the mean over tokens.
    """
    attributes = list(normalized)
    matrix = np.array([normalized[a] for a in attributes])  # (A, K)
    centered = matrix - matrix.mean(1, keepdims=True)
    best = [attributes[int(i)] for i in centered.argmax(0)]
    spread = {a: float(matrix[i].max() - matrix[i].min()) for i, a in enumerate(attributes)}
    relative = [float(matrix[i].std() / max(abs(matrix[i].mean()), 1e-6)) for i in range(len(attributes))]
    return {
        "best_attribute": best,
        "best_attribute_counts": {a: best.count(a) for a in attributes if best.count(a)},
        "distinct_best": len(set(best)),
        "spread": spread,
        "mean_spread": float(np.mean(list(spread.values()))),
        "relative_sd": float(np.mean(relative)),
    }


def collapse(parts: ModelParts, data: ScratchData, num_tokens: int) -> dict[str, Any]:
    """Token-collapse diagnostics of the test images and their first captions (K > 1 only)."""
    if num_tokens < 2:
        return {}
    images = embed_images(parts, data.test.images)
    texts = embed_texts(parts, [group[0] for group in data.test.captions])
    return {
        "image": token_collapse(images, num_tokens).to_dict(),
        "text": token_collapse(texts, num_tokens).to_dict(),
    }


def run_scratch_arm(
    arm: ScratchArm,
    data: ScratchData,
    towers: TowerConfig,
    train: ScratchTrainConfig,
    seed: int,
    learning_rate: float,
    noise: float,
    noise_seed: int,
    splits: tuple[str, ...],
) -> dict[str, Any]:
    """Train one model and evaluate it on ``splits`` (``"test"`` adds zero-shot, collapse and probes)."""
    start = time.monotonic()
    table = noisy_caption_table(data.train.captions, np.arange(len(data.train)), noise, noise_seed)
    parts, loss, history = train_model(arm, data, towers, table, train, seed, learning_rate)
    train_seconds = time.monotonic() - start
    metrics: dict[str, Any] = {}
    for split in splits:
        metrics[split] = retrieval(parts, getattr(data, split), arm.num_tokens)
        if split == "test":
            metrics[split].update(zero_shot(parts, data, arm.num_tokens))
    record: dict[str, Any] = {
        "arm": asdict(arm),
        "metrics": metrics,
        "final_scale": loss.scale,
        "noise_fraction_realized": table.noise_fraction,
        "history": history,
        "train_seconds": train_seconds,
        "num_parameters": sum(p.numel() for p in parts.parameters()),
        "model_classes": {
            "text": type(parts.text).__name__,
            "image": type(parts.image).__name__,
            "pooling": type(parts.pooling).__name__,
            "loss": type(loss).__name__,
            "image_token_source": parts.pooling.heads["image"].token_source,
            "text_token_source": parts.pooling.heads["text"].token_source,
        },
    }
    if "test" in splits:
        record["collapse"] = collapse(parts, data, arm.num_tokens)
        record["probes"] = token_probes(parts, data, arm.num_tokens, arm.token_dim)
    record["seconds"] = time.monotonic() - start
    return record


__all__ = [
    "PROBE_ATTRIBUTES",
    "ScratchData",
    "ScratchTrainConfig",
    "prepare_data",
    "run_scratch_arm",
    "specialization",
    "token_probes",
    "train_model",
    "zero_shot",
]


def run_stored(
    section_json: str, spec: dict[str, Any], folder: str, threads: int = 1, rerun: bool = False
) -> tuple[dict[str, Any], bool]:
    """Run one regime-C specification through a :class:`~evaluation.studies.run_store.RunStore` in ``folder``
    (reused when stored, unless ``rerun``); returns the record and whether it ran now. Top-level, so worker
    processes can call it."""
    from evaluation.studies.run_store import RunStore

    torch.set_num_threads(threads)
    section = json.loads(section_json)
    store = RunStore(folder, rerun=rerun)

    def run() -> dict[str, Any]:
        data = cached_data(json.dumps({key: section[key] for key in ("world", "data")}, sort_keys=True))
        return run_scratch_arm(
            ScratchArm.from_config(spec["arm"], {k: v for k, v in spec["arm_config"].items() if k != "name"}),
            data,
            TowerConfig(**section["towers"]),
            ScratchTrainConfig(**section["train"]),
            spec["seed"],
            spec["learning_rate"],
            spec["noise_fraction"],
            spec["noise_seed"],
            tuple(spec["eval_splits"]),
        )

    record = store.get_or_run(spec, run)
    return record, store.ran == 1
