"""K>1: template ensembles are averaged token-wise (checked against a float64 computation), logits and metrics
against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from st_oblique import manifold
from st_oblique.evaluation.classification import (
    classification_metrics,
    zeroshot_classification,
    zeroshot_classifier,
    zeroshot_logits,
)
from st_oblique.evaluation.encoding import encode_images

CLASSNAMES = ["dog", "cat", "car", "horse", "ball", "guitar"]
TEMPLATES = ["a photo of a {c}.", "a {c} in the park", "two {c} on the beach", "the {c}"]


def float64_classifier(model, classnames, templates, num_tokens) -> torch.Tensor:
    """Per class: every prompt's K tokens unit-normalized, averaged over prompts, renormalized, in float64."""
    prompts = [template.format(c=name) for name in classnames for template in templates]
    raw = model.encode(prompts, convert_to_tensor=True).double()
    tokens = raw.view(len(classnames), len(templates), num_tokens, -1)
    tokens = tokens / tokens.norm(dim=-1, keepdim=True)
    mean = tokens.mean(dim=1)
    return (mean / mean.norm(dim=-1, keepdim=True)).flatten(1)


def test_oblique_ensemble_matches_float64_reference(oblique_model):
    classifier = zeroshot_classifier(oblique_model, CLASSNAMES, TEMPLATES)
    reference = float64_classifier(oblique_model, CLASSNAMES, TEMPLATES, num_tokens=4)
    assert classifier.shape == (len(CLASSNAMES), 4 * 8)
    torch.testing.assert_close(classifier.double(), reference, atol=1e-6, rtol=0)
    assert manifold.is_on_manifold(classifier, num_tokens=4, atol=1e-5)


def test_whole_vector_ensemble_would_leave_the_manifold(oblique_model):
    """CLIP_benchmark's recipe (normalize, average, renormalize the flat vector) re-weights the K tokens."""
    prompts = [template.format(c=CLASSNAMES[0]) for template in TEMPLATES]
    flat = oblique_model.encode(prompts, convert_to_tensor=True)
    clip_recipe = F.normalize(F.normalize(flat, dim=-1).mean(0), dim=-1)
    norms = manifold.token_norms(clip_recipe, num_tokens=4)
    assert (norms - 0.5).abs().max() > 1e-3  # would all be 1/sqrt(K) = 0.5 if the recipe kept tokens balanced
    token_wise = zeroshot_classifier(oblique_model, CLASSNAMES[:1], TEMPLATES)[0]
    torch.testing.assert_close(manifold.token_norms(token_wise, 4), torch.ones(4), atol=1e-5, rtol=0)


def test_logits_are_scaled_sums_of_per_token_cosines(oblique_model, digits):
    images = encode_images(oblique_model, digits.images[:20])
    classifier = zeroshot_classifier(oblique_model, CLASSNAMES, TEMPLATES)
    logits = zeroshot_logits(images, classifier, num_tokens=4)
    image_tokens = images.double().view(20, 4, 8)
    class_tokens = classifier.double().view(len(CLASSNAMES), 4, 8)
    cosines = torch.stack(
        [
            torch.stack(
                [F.cosine_similarity(image_tokens[i], class_tokens[c], dim=-1).sum() for c in range(len(CLASSNAMES))]
            )
            for i in range(20)
        ]
    )
    torch.testing.assert_close(logits.double(), 100 / 4 * cosines, atol=1e-4, rtol=0)


def test_classification_metrics_against_numpy_reference():
    generator = np.random.default_rng(0)
    logits = generator.normal(size=(300, 7))
    labels = generator.integers(0, 7, 300)
    logits[np.arange(0, 300, 3), labels[::3]] += 3.0  # make a third of the rows correct
    metrics = classification_metrics(torch.tensor(logits, dtype=torch.float32), labels.tolist())

    ranks = np.argsort(-logits, axis=1)
    predictions = ranks[:, 0]
    recalls = [np.mean(predictions[labels == c] == c) for c in np.unique(labels)]
    assert metrics["acc1"] == pytest.approx(np.mean(predictions == labels), abs=1e-12)
    assert metrics["acc5"] == pytest.approx(np.mean([labels[i] in ranks[i, :5] for i in range(300)]), abs=1e-12)
    assert metrics["mean_per_class_recall"] == pytest.approx(np.mean(recalls), abs=1e-12)


def test_classification_checks_its_inputs(oblique_model, digits):
    with pytest.raises(ValueError, match="labels"):
        zeroshot_classification(oblique_model, digits.images[:3], [0, 1], CLASSNAMES)
    with pytest.raises(ValueError, match=r"\{c\}"):
        zeroshot_classifier(oblique_model, CLASSNAMES, ["a photo without placeholder"])
    with pytest.raises(ValueError, match="Labels must lie"):
        classification_metrics(torch.zeros(2, 3), [0, 3])
