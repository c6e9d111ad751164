"""Recall@k of the retrieval harness on hand-made cases and against a brute-force float64 reference."""

from __future__ import annotations

import pytest
import torch

from st_oblique.evaluation.encoding import encode_images
from st_oblique.evaluation.retrieval import recall_at_k, retrieval_metrics, zeroshot_retrieval


def test_recall_at_k_hand_example():
    # 3 captions x 2 images; caption 0 and 1 belong to image 0, caption 2 to image 1
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    metrics = retrieval_metrics(scores, torch.tensor([0, 0, 1]), recall_k=(1, 2))
    assert metrics["image_retrieval_recall@1"] == pytest.approx(1 / 3)  # only caption 0 ranks its image first
    assert metrics["image_retrieval_recall@2"] == 1.0  # k >= number of images
    # image 0: best caption is 0 (its own) -> hit; image 1: best caption is 1 (image 0's) -> miss
    assert metrics["text_retrieval_recall@1"] == 0.5
    assert metrics["text_retrieval_recall@2"] == 1.0  # image 1's top two captions (1, 2) include its own
    positives = torch.tensor([[True, False], [False, True]])
    assert recall_at_k(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), positives, 1).tolist() == [0.0, 0.0]


def brute_force_recalls(text, image, caption_image, k) -> tuple[float, float]:
    """Hit rates from float64 sums of per-token cosines, with explicit loops."""
    num_tokens = 4
    t = text.double().view(len(text), num_tokens, -1)
    i = image.double().view(len(image), num_tokens, -1)
    t, i = t / t.norm(dim=-1, keepdim=True), i / i.norm(dim=-1, keepdim=True)
    scores = torch.einsum("akd,bkd->ab", t, i)
    text_to_image = sum(int(caption_image[a] in scores[a].argsort(descending=True)[:k].tolist()) for a in range(len(t)))
    image_to_text = 0
    for b in range(len(i)):
        top = scores[:, b].argsort(descending=True)[:k].tolist()
        image_to_text += int(any(caption_image[a] == b for a in top))
    return text_to_image / len(t), image_to_text / len(i)


def test_zeroshot_retrieval_matches_brute_force(oblique_model, digits):
    images = digits.images[:30]
    captions = [[f"a {w} {n}" for w in ("dog", "cat", "car")[: 1 + index % 3]] for index, n in enumerate(range(30))]
    metrics = zeroshot_retrieval(oblique_model, images, captions, batch_size=16)
    texts = [caption for group in captions for caption in group]
    caption_image = [index for index, group in enumerate(captions) for _ in group]
    text = oblique_model.encode(texts, convert_to_tensor=True)
    image = encode_images(oblique_model, images)
    for k in (1, 5, 10):
        t2i, i2t = brute_force_recalls(text, image, caption_image, k)
        assert metrics[f"image_retrieval_recall@{k}"] == pytest.approx(t2i, abs=1e-6)
        assert metrics[f"text_retrieval_recall@{k}"] == pytest.approx(i2t, abs=1e-6)


def test_retrieval_checks_captions(oblique_model, digits):
    with pytest.raises(ValueError, match="one list per image"):
        zeroshot_retrieval(oblique_model, digits.images[:2], [["a"]])
    with pytest.raises(ValueError, match="non-empty list"):
        zeroshot_retrieval(oblique_model, digits.images[:2], ["a dog", "a cat"])
    with pytest.raises(ValueError, match="non-empty list"):
        zeroshot_retrieval(oblique_model, digits.images[:2], [["a dog"], []])
