"""Regime C of the topology study: the towers and losses are st-oblique's own classes, the direct-tensor training
path gives what the package's own encode() gives, the probes and specialization measure work, and ``--smoke``
runs regime C end to end (no shared data needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.studies.from_scratch import ridge_probe_accuracy, specialization
from evaluation.studies.scratch_towers import (
    ScratchArm,
    SphereReadout,
    TowerConfig,
    build_loss,
    build_model,
    tokenize,
    write_random_towers,
)
from evaluation.studies.synthetic_scenes import SceneWorld
from evaluation.studies.topology import DEFAULT_CONFIG, load_config, main
from st_oblique import ObliqueContrastiveLoss, ObliquePooling, ObliqueSentenceTransformer
from st_oblique.builders import SPARO
from st_oblique.modules import ClassTokenTransformer, ImageClassTokenTransformer

TOWERS = TowerConfig(width=16, layers=1, heads=1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_random_towers(tmp_path_factory.mktemp("towers"), TOWERS, seed=0)


def arms():
    section = load_config(DEFAULT_CONFIG)["regime_c"]["arms"]
    return {name: ScratchArm.from_config(name, spec) for name, spec in section.items()}


@pytest.mark.parametrize("name", list(arms()))
def test_towers_and_losses_are_the_packages_own_classes(folders, name):
    arm = arms()[name]
    parts = build_model(arm, folders, seed=0)
    loss = build_loss(parts.model, arm)
    assert isinstance(parts.model, ObliqueSentenceTransformer) and parts.model.similarity_fn_name == "dot"
    assert type(parts.text) is ClassTokenTransformer
    assert isinstance(parts.image, ImageClassTokenTransformer)
    assert isinstance(parts.pooling, ObliquePooling) and parts.pooling.num_tokens == arm.num_tokens
    assert type(loss) is ObliqueContrastiveLoss and loss.model is parts.model
    assert loss.reduction == arm.reduction and loss.learnable_scale == arm.learnable_scale
    assert loss.scale == pytest.approx(arm.scale, rel=1e-6)
    sources = {modality: head.token_source for modality, head in parts.pooling.heads.items()}
    if arm.head in ("sparo", "sphere_readout"):
        assert sources == {"text": "attention", "image": "attention"}
        assert parts.text.num_class_tokens == 1 and parts.image.num_class_tokens == 1
        assert loss.reduction == SPARO.reduction == "mean" and loss.max_scale == SPARO.max_scale
        assert all(head.attention.num_heads == 1 for head in parts.pooling.heads.values())
        slots = arm.slots or arm.num_tokens
        assert all(head.num_tokens == slots for head in parts.pooling.heads.values())
        if arm.head == "sphere_readout":  # Sparo's network, one unit vector: a sphere to the loss
            assert isinstance(parts.pooling, SphereReadout) and (loss.num_tokens, loss.token_dim) == (1, 512)
    elif arm.head == "class_attention":
        # the towers as they are; K class tokens join after them, drawn at random (from scratch: nothing to copy)
        assert sources == {"text": "class_attention", "image": "class_attention"}
        assert parts.text.num_class_tokens == 1 and parts.image.num_class_tokens == 1
        for head in parts.pooling.heads.values():
            tokens = head.class_attention.class_tokens.detach()
            cosine = torch.nn.functional.normalize(tokens, dim=-1) @ torch.nn.functional.normalize(tokens, dim=-1).T
            assert cosine[~torch.eye(len(tokens), dtype=torch.bool)].abs().max() < 0.9
    else:
        # K class tokens inside both towers, read by the head as the first K token states
        assert sources == {"text": "first", "image": "first"}
        assert parts.text.num_class_tokens == arm.num_tokens == parts.image.num_class_tokens
    if arm.num_tokens > 1 and arm.head == "class_tokens":
        tokens = parts.image.extra_class_tokens.tokens.detach()
        cosine = torch.nn.functional.normalize(tokens, dim=-1) @ torch.nn.functional.normalize(tokens, dim=-1).T
        off_diagonal = cosine[~torch.eye(len(tokens), dtype=torch.bool)]
        assert off_diagonal.abs().max() < 0.9  # independent random class tokens, not copies of one


@pytest.mark.parametrize("name", ["oblique16_fixed1", "sparo16", "class_attention16", "sphere_readout16"])
def test_direct_tensor_path_matches_the_models_encode(folders, name):
    """The study feeds pixel tensors and pre-tokenized ids; ST's encode() (PIL images, raw texts) gives the same."""
    parts = build_model(arms()[name], folders, seed=0)
    scenes = SceneWorld().sample(4, seed=0)
    parts.train(False)
    with torch.inference_mode():
        direct = parts.encode_images(torch.from_numpy(scenes.images))
        texts = [group[0] for group in scenes.captions]
        direct_text = parts.encode_texts(tokenize(parts.text, texts))
    images = [Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)) for image in scenes.images]
    encoded = parts.model.encode(images, convert_to_tensor=True)
    encoded_text = parts.model.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(direct, encoded, atol=2e-2, rtol=0)  # 8-bit PIL rounding of the pixels
    torch.testing.assert_close(direct_text, encoded_text, atol=1e-5, rtol=0)


def test_sphere_readout_is_sparos_network_normalized_once(folders):
    """The sphere with Sparo's read-out: the same slots and projections as Sparo (same seed, same weights), and its
    embedding is Sparo's K projected slots concatenated and normalized as one vector."""
    sparo = build_model(arms()["sparo16"], folders, seed=0)
    readout = build_model(arms()["sphere_readout16"], folders, seed=0)
    readout.pooling.load_state_dict(sparo.pooling.state_dict())
    scenes = SceneWorld().sample(3, seed=0)
    sparo.train(False)
    readout.train(False)
    with torch.inference_mode():
        pixels = torch.from_numpy(scenes.images)
        features = sparo.image({"pixel_values": (pixels - 0.5) / 0.5, "modality": "image"})
        slots = sparo.pooling.heads["image"].token_projections(features["token_embeddings"], None, None)
        expected = torch.nn.functional.normalize(slots.flatten(1), dim=-1)
        torch.testing.assert_close(readout.encode_images(pixels), expected)
        per_slot = sparo.encode_images(pixels).reshape(3, 16, 32)
        torch.testing.assert_close(per_slot, torch.nn.functional.normalize(slots, dim=-1))
    with pytest.raises(ValueError, match="'slots' is for"):
        ScratchArm.from_config("bad", {"num_tokens": 1, "token_dim": 512, "head": "sphere_readout"})


def test_ridge_probe_separates_informative_from_random_features():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    informative = torch.from_numpy(np.eye(4)[labels] + 0.3 * rng.normal(size=(400, 4)))
    noise = torch.from_numpy(rng.normal(size=(400, 8)))
    assert ridge_probe_accuracy(informative, labels, 4) > 0.9
    assert ridge_probe_accuracy(noise, labels, 4) < 0.4


def test_specialization_is_zero_for_identical_tokens_and_counts_best_attributes():
    same = specialization({"shape": [0.5] * 4, "colour": [0.9] * 4})
    assert same["mean_spread"] == 0.0 and same["relative_sd"] == 0.0
    special = specialization({"shape": [0.9, 0.9, 0.1, 0.1], "colour": [0.1, 0.1, 0.9, 0.9]})
    assert special["best_attribute"] == ["shape", "shape", "colour", "colour"]
    assert special["distinct_best"] == 2 and special["mean_spread"] == pytest.approx(0.8)


@pytest.mark.slow
def test_smoke_regime_c_runs_every_arm_and_reports(tmp_path):
    output = tmp_path / "topology"
    argv = ["--config", str(DEFAULT_CONFIG), "--smoke", "--regime", "C", "--output-dir", str(output)]
    assert main(argv) == 0
    config = load_config(DEFAULT_CONFIG, smoke=True)["regime_c"]
    paths = sorted((output / "runs").glob("*.json"))
    assert paths and all(path.name.startswith("C_") for path in paths)
    records = [json.loads(path.read_text()) for path in paths]
    main_runs = [r for r in records if r["spec"]["phase"] == "main"]
    assert {r["spec"]["arm"] for r in main_runs} == set(config["arms"])
    assert len(main_runs) == len(config["arms"]) * len(config["seeds"]) * len(config["conditions"])
    selection = [r for r in records if r["spec"]["phase"] == "select"]
    assert len(selection) == len(config["arms"]) * len(config["lr_selection"]["grid"])
    assert all(set(r["metrics"]) == {"val"} for r in selection)
    for record in main_runs:
        test = record["metrics"]["test"]
        assert {"mean_recall", "zs_shape_acc1", "zs_colour_acc1", "zs_relation_acc1"} <= set(test)
        assert record["model_classes"]["loss"] == "ObliqueContrastiveLoss"
        assert set(record["probes"]["accuracy"]) == {"shape", "colour", "size", "position", "background", "relation"}
        if record["spec"]["arm_config"]["num_tokens"] > 1:
            assert 0.0 <= record["collapse"]["image"]["effective_rank"] <= 16.01
    # paired design: one noisy caption table per noise level, whatever the arm
    noisy = {round(r["noise_fraction_realized"], 6) for r in main_runs if r["spec"]["noise_fraction"] == 0.3}
    assert len(noisy) == 1 and 0.25 < noisy.pop() < 0.35
    results = (output / "results.md").read_text()
    assert "## Regime C" in results and "Per-token linear probes" in results
    for arm in config["arms"]:
        assert f"`{arm}`" in results
    assert (output / "regime_c_retrieval.png").stat().st_size > 1000
    summary = json.loads((output / "summary.json").read_text())
    assert summary["runs_executed"] == len(records)
    # again: every run reused
    assert main(argv) == 0
    assert json.loads((output / "summary.json").read_text())["runs_executed"] == 0
