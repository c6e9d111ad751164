"""ObliqueSigmoidLoss against open_clip's SigLipLoss (K=1) and a float64 formula (K>1)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from losses.loss_cases import global_embeddings, pooling_holder
from open_clip.loss import SigLipLoss

from st_oblique import ObliqueSigmoidLoss, manifold


def grads_of(value: torch.Tensor, loss: ObliqueSigmoidLoss, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(value, [*leaves, *loss.temperature_parameters().values()]))


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-10), (torch.float32, 1e-6)])
def test_k1_equals_open_clip_siglip(dtype, tolerance):
    image, text = (c.requires_grad_() for c in global_embeddings(2, batch_size=16, num_tokens=1, token_dim=32, dtype=dtype))
    loss = ObliqueSigmoidLoss(pooling_holder(num_tokens=1, token_dim=32), scale=10.0, bias=-10.0).to(dtype)
    log_scale = loss.logit_scale.log_scale_bias.detach().clone().requires_grad_()
    bias = loss.logit_scale.logit_bias.detach().clone().requires_grad_()
    expected = SigLipLoss()(image, text, log_scale.exp(), bias)
    expected_grads = torch.autograd.grad(expected, [image, text, log_scale, bias])
    value = loss.compute_loss_from_embeddings([image, text])
    torch.testing.assert_close(value, expected, atol=tolerance, rtol=tolerance)
    for mine, theirs in zip(grads_of(value, loss, [image, text]), expected_grads, strict=True):
        torch.testing.assert_close(mine, theirs, atol=tolerance, rtol=tolerance)


def test_k16_with_hard_negatives_equals_a_float64_reference():
    columns = [c.requires_grad_() for c in global_embeddings(3, batch_size=10, num_tokens=16, token_dim=32)]
    loss = ObliqueSigmoidLoss(pooling_holder(16, 32), scale=0.8, bias=-7.0).double()
    value = loss.compute_loss_from_embeddings(columns)

    log_scale = loss.logit_scale.log_scale_bias.detach().clone().requires_grad_()
    bias = loss.logit_scale.logit_bias.detach().clone().requires_grad_()
    anchors, *candidate_columns = (manifold.to_tokens(c, 16) for c in columns)
    candidates = torch.cat(candidate_columns)
    similarity = (anchors[:, None] * candidates[None]).sum(dim=(-2, -1))  # sum_k <a_ik, c_jk>, (10, 20)
    labels = torch.cat([torch.eye(10), torch.zeros(10, 10)], dim=1).double()  # only pair (i, i) is positive
    logits = log_scale.exp() * similarity + bias
    expected = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / 10
    expected_grads = torch.autograd.grad(expected, [*columns, log_scale, bias])

    torch.testing.assert_close(value, expected, atol=1e-12, rtol=1e-12)
    for mine, theirs in zip(grads_of(value, loss, columns), expected_grads, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-12, rtol=1e-10)


def test_defaults_scale_the_siglip_init_to_the_oblique_range():
    loss = ObliqueSigmoidLoss(pooling_holder(16, 32))
    assert (loss.scale, loss.bias) == (1.0, -16.0)  # a perfectly aligned pair (s = K) starts at logit 0
    assert loss.learnable_scale and loss.learnable_bias
    assert set(loss.temperature_parameters()) == {"logit_scale", "logit_bias"}
    assert loss.logit_scale.values() == {"logit_scale": 1.0, "logit_bias": -16.0}
    assert ObliqueSigmoidLoss(pooling_holder(16, 32), scale=2.0).bias == -32.0
    fixed = ObliqueSigmoidLoss(pooling_holder(), learnable_scale=False, learnable_bias=False)
    # The loss holds no parameters of its own: the scale and bias are the model's.
    assert fixed.temperature_parameters() == {} and list(fixed.parameters(recurse=False)) == []
    temperature = {name for name, _ in loss.named_parameters() if ".temperature." in name}
    assert temperature == {"model.0.temperature.log_scale_bias", "model.0.temperature.logit_bias"}
    config = ObliqueSigmoidLoss(pooling_holder(), scale=2.0, bias=-3.0).get_config_dict()
    assert config["bias"] == -3.0 and config["scale"] == 2.0 and config["learnable_bias"]
    assert "zhai2023sigmoid" in fixed.citation
    with pytest.raises(ValueError, match="bias must be a finite number"):
        ObliqueSigmoidLoss(pooling_holder(), bias=math.inf)


def test_a_single_pair_still_trains_and_bad_embeddings_are_explained():
    loss = ObliqueSigmoidLoss(pooling_holder())
    anchors, positives = (c.requires_grad_() for c in global_embeddings(2, batch_size=1, dtype=torch.float32))
    value = loss.compute_loss_from_embeddings([anchors, positives])
    value.backward()
    assert value.item() > 0 and anchors.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="Normalize module"):
        loss.compute_loss_from_embeddings([anchors.detach() / 2, positives.detach()])
