"""The topology study trains st-oblique's own classes: ObliquePooling heads, ObliqueContrastiveLoss, ST's MNRL."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from open_clip.loss import ClipLoss
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sklearn.decomposition import PCA

from evaluation.studies.lit_heads import (
    Arm,
    LitData,
    TrainConfig,
    apply_pca,
    build_head,
    build_loss,
    evaluate_head,
    fit_pca,
    run_arm,
)
from evaluation.studies.splits import caption_owners, noisy_caption_table
from evaluation.studies.text_finetune import TextArm, build_text_model
from evaluation.studies.topology import DEFAULT_CONFIG, load_config
from st_oblique import ObliqueContrastiveLoss, ObliquePooling
from st_oblique.modules.pooling import ObliqueHead

CONFIG = load_config(DEFAULT_CONFIG)
ARMS = {name: Arm.from_config(name, spec) for name, spec in CONFIG["regime_a"]["arms"].items()}
WIDTHS = {"image": 24, "text": 16}


@pytest.mark.parametrize("name", list(ARMS))
def test_every_regime_a_arm_is_an_oblique_pooling_with_the_package_loss(name):
    arm = ARMS[name]
    head = build_head(arm, WIDTHS)
    loss = build_loss(head, arm)
    assert type(head) is ObliquePooling
    assert all(type(h) is ObliqueHead for h in head.heads.values()) and set(head.heads) == {"image", "text"}
    assert type(loss) is ObliqueContrastiveLoss
    assert (loss.num_tokens, loss.token_dim) == (arm.num_tokens, arm.token_dim)
    assert arm.num_tokens * arm.token_dim == 512  # the study's equal budget
    assert loss.learnable_scale == arm.learnable_scale and loss.scale == pytest.approx(arm.scale, rel=1e-6)
    if arm.num_tokens == 1:
        assert name.startswith("sphere")


def test_sphere_arm_loss_is_clips_loss():
    """K=1 ObliquePooling + ObliqueContrastiveLoss is CLIP's head and loss (checked against open_clip's ClipLoss)."""
    arm = ARMS["sphere_attention"]
    torch.manual_seed(0)
    head = build_head(arm, WIDTHS)
    loss = build_loss(head, arm)
    images = head({"token_embeddings": torch.randn(6, 5, 24), "modality": "image"})["sentence_embedding"]
    texts = head({"token_embeddings": torch.randn(6, 4, 16), "attention_mask": torch.ones(6, 4), "modality": "text"})[
        "sentence_embedding"
    ]
    reference = ClipLoss()(images, texts, torch.tensor(arm.scale))
    value = loss.compute_loss_from_embeddings([images, texts])
    assert value.item() == pytest.approx(reference.item(), rel=1e-5)


def tiny_lit_data(num_images: int = 24, seed: int = 0) -> LitData:
    """Random token states in which each caption is a noisy copy of its image's mean state (learnable)."""
    generator = torch.Generator().manual_seed(seed)
    captions = [[f"image {i} caption {j}" for j in range(3)] for i in range(num_images)]
    texts, owners = caption_owners(captions)
    image_tokens = torch.randn(num_images, 5, WIDTHS["image"], generator=generator)
    mixing = torch.randn(WIDTHS["image"], WIDTHS["text"], generator=generator) / 4
    text_tokens = image_tokens.mean(1)[owners].unsqueeze(1) @ mixing + 0.3 * torch.randn(
        len(texts), 4, WIDTHS["text"], generator=generator
    )
    mask = torch.ones(len(texts), 4, dtype=torch.bool)
    mask[::2, 3] = False
    labels = torch.arange(num_images) % 3
    return LitData(
        image_tokens=image_tokens,
        text_tokens=text_tokens,
        text_mask=mask,
        captions=captions,
        caption_owner=owners,
        captions_of=[[3 * i, 3 * i + 1, 3 * i + 2] for i in range(num_images)],
        splits={"train": np.arange(16), "val": np.arange(16, 20), "test": np.arange(20, 24)},
        zs_image_tokens=image_tokens[:9],
        zs_labels=labels[:9],
        zs_prompt_tokens=text_tokens[:6],
        zs_prompt_mask=mask[:6],
        zs_prompt_class=torch.tensor([0, 0, 1, 1, 2, 2]),
        classnames=["a", "b", "c"],
    )


def test_training_moves_the_scale_only_with_a_separate_learning_rate_and_records_it():
    data = tiny_lit_data()
    table = noisy_caption_table(data.captions, data.splits["train"], 0.0, seed=0)
    config = TrainConfig(epochs=4, batch_size=8, log_every=1)
    arm = ARMS["oblique16_learnable"]
    shared = run_arm(
        arm, data, table, config, seed=0, learning_rate=1e-3, scale_learning_rate=None, splits=("val", "test")
    )
    separate = run_arm(arm, data, table, config, seed=0, learning_rate=1e-3, scale_learning_rate=0.2, splits=("val",))
    assert abs(np.log(shared["final_scale"])) < 8 * 1e-3 + 1e-6  # 8 Adam steps of at most ~lr each
    assert abs(np.log(separate["final_scale"])) > 0.1
    assert separate["final_scale"] <= arm.max_scale
    assert separate["recorded_logit_scale"] == pytest.approx(separate["final_scale"])
    metrics = shared["metrics"]["test"]
    assert set(metrics) >= {"image_retrieval_recall@1", "text_retrieval_recall@10", "mean_recall", "acc1"}
    assert all(0.0 <= value <= 1.0 for key, value in metrics.items() if key != "acc5" or not np.isnan(value))
    assert [entry["step"] for entry in shared["history"]] == list(range(9))


def test_evaluation_uses_the_retrieval_metrics_of_the_evaluation_package():
    """With an identity-like head the retrieval numbers equal those computed directly on the embeddings."""
    from st_oblique.evaluation.retrieval import retrieval_metrics, retrieval_scores

    data = tiny_lit_data()
    head = build_head(ARMS["oblique4_fixed1"], WIDTHS)
    metrics = evaluate_head(head, data, "test", zero_shot=False)
    images = data.splits["test"]
    caption_ids = [c for image in images for c in data.captions_of[int(image)]]
    with torch.no_grad():
        image_embeddings = head({"token_embeddings": data.image_tokens[images], "modality": "image"})[
            "sentence_embedding"
        ]
        text_embeddings = head(
            {
                "token_embeddings": data.text_tokens[caption_ids],
                "attention_mask": data.text_mask[caption_ids].long(),
                "modality": "text",
            }
        )["sentence_embedding"]
    scores = retrieval_scores(text_embeddings, image_embeddings, 4)
    expected = retrieval_metrics(scores, torch.arange(len(images)).repeat_interleave(3))
    assert {key: metrics[key] for key in expected} == pytest.approx(expected)


def test_pca_matches_scikit_learn():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(30, 4, 12, generator=generator) @ torch.randn(12, 12, generator=generator)
    mean, components, kept = fit_pca(tokens, None, 5)
    reference = PCA(n_components=5).fit(tokens.reshape(-1, 12).double().numpy())
    assert kept == pytest.approx(reference.explained_variance_ratio_.sum(), rel=1e-6)
    projected = apply_pca(tokens, mean, components).reshape(-1, 5).double().numpy()
    expected = reference.transform(tokens.reshape(-1, 12).double().numpy())
    assert np.abs(np.abs(projected) - np.abs(expected)).max() < 1e-4  # principal directions are defined up to sign


def test_regime_b_arms_use_sentence_transformers_mnrl_and_the_package_loss(tiny_bert_dir):
    arms = {name: TextArm.from_config(name, spec) for name, spec in CONFIG["regime_b"]["arms"].items()}
    assert {arm.kind for arm in arms.values()} == {"untouched", "mnrl", "oblique"}
    for arm in arms.values():
        model, loss = build_text_model(arm, tiny_bert_dir)
        if arm.kind == "mnrl":
            assert type(loss) is MultipleNegativesRankingLoss and loss.scale == arm.scale
        elif arm.kind == "oblique":
            assert type(loss) is ObliqueContrastiveLoss
            poolings = [module for module in model.modules() if isinstance(module, ObliquePooling)]
            assert len(poolings) == 1 and (poolings[0].num_tokens, poolings[0].token_dim) == (
                arm.num_tokens,
                arm.token_dim,
            )
            assert arm.num_tokens * arm.token_dim == 384 and arm.scale * arm.num_tokens == pytest.approx(20.0)
        else:
            assert loss is None


def test_where_the_k_tokens_come_from_in_regime_a():
    """Issue 29's arms: late class tokens (1 or 2 blocks) and the text tower's own K class tokens ("first"), which
    read another view of the text states (the tower run with K class tokens) through LitData.for_arm."""
    late = build_head(ARMS["class_attention1_fixed1"], WIDTHS)
    assert {head.token_source for head in late.heads.values()} == {"class_attention"}
    assert [len(head.class_attention.blocks) for head in late.heads.values()] == [1, 1]
    assert len(build_head(ARMS["class_attention2_fixed1"], WIDTHS).heads["text"].class_attention.blocks) == 2
    first = ARMS["first16_fixed1"]
    head = build_head(first, WIDTHS)
    assert (head.heads["text"].token_source, head.heads["image"].token_source) == ("first", "attention")

    data = tiny_lit_data()
    with pytest.raises(ValueError, match="reads 16 class tokens of the text tower"):
        data.for_arm(first)
    class_states = torch.cat([data.text_tokens[:, :1].expand(-1, 15, -1), data.text_tokens], dim=1)
    class_mask = torch.cat([torch.ones(len(class_states), 15, dtype=torch.bool), data.text_mask], dim=1)
    prompts = torch.cat([data.zs_prompt_tokens[:, :1].expand(-1, 15, -1), data.zs_prompt_tokens], dim=1)
    prompt_mask = torch.cat([torch.ones(len(prompts), 15, dtype=torch.bool), data.zs_prompt_mask], dim=1)
    data.text_views[16] = (class_states, class_mask, prompts, prompt_mask)
    view = data.for_arm(first)
    assert view.text_tokens is class_states and view.zs_prompt_mask is prompt_mask
    assert data.for_arm(ARMS["oblique16_fixed1"]) is data
    table = noisy_caption_table(data.captions, data.splits["train"], 0.0, seed=0)
    config = TrainConfig(epochs=1, batch_size=8, log_every=1)
    for arm in (first, ARMS["class_attention2_fixed1"]):
        record = run_arm(arm, data, table, config, seed=0, learning_rate=1e-3, scale_learning_rate=None,
                         splits=("test",))
        assert 0.0 <= record["metrics"]["test"]["mean_recall"] <= 1.0


def test_stored_run_records_keep_their_specification():
    """Options added to the arms later (issue 29) leave the specification of the arms that predate them unchanged,
    so the committed run records are reused, not run again."""
    import json
    from pathlib import Path

    from evaluation.studies.scratch_towers import ScratchArm
    from evaluation.studies.topology import regime_a_budget, regime_b_budget, regime_c_budget

    runs = Path(__file__).resolve().parents[2] / "evaluation" / "results" / "topology" / "runs"
    checked = 0
    for regime, arm_class, section, budget in (
        ("A", Arm, "regime_a", regime_a_budget),
        ("B", TextArm, "regime_b", regime_b_budget),
        ("C", ScratchArm, "regime_c", regime_c_budget),
    ):
        wanted = json.loads(json.dumps(budget(CONFIG[section]), default=str))
        for path in runs.glob(f"{regime}_*.json"):
            spec = json.loads(path.read_text())["spec"]
            name = spec["arm"]
            arm = arm_class.from_config(name, CONFIG[section]["arms"][name]).spec()
            assert json.loads(json.dumps(arm, default=str)) == spec["arm_config"], path.name
            assert spec["budget"] == wanted, path.name
            checked += 1
    assert checked >= 159  # the 101 + 10 + 48 records that predate issue 29
