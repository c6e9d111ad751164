"""LogitScale: the model's temperature (fixed or learned, capped, optional sigmoid bias), saved with ObliquePooling."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import st_oblique
from st_oblique.modules.logit_scale import PAPER_MAX_SCALE, LogitScale
from st_oblique.modules.pooling import ObliquePooling


def test_fixed_and_learnable_scales_and_their_state():
    fixed = LogitScale(2.0)
    assert fixed() == 2.0 and isinstance(fixed(), float)  # exact, no float32 round trip
    assert list(fixed.parameters()) == [] and set(fixed.state_dict()) == {"log_scale_bias"}
    learned = LogitScale(2.0, learnable=True, max_value=PAPER_MAX_SCALE)
    assert [name for name, _ in learned.named_parameters()] == ["log_scale_bias"]
    assert torch.is_tensor(learned()) and learned().requires_grad
    assert learned.learnable_parameters() == {"logit_scale": learned.log_scale_bias}


def test_the_cap_clamps_the_parameter_in_place_so_it_can_come_back_down():
    scale = LogitScale(3.0, learnable=True, max_value=PAPER_MAX_SCALE)
    with torch.no_grad():
        scale.log_scale_bias.fill_(math.log(10.0))
    assert scale().item() == pytest.approx(PAPER_MAX_SCALE, rel=1e-6)
    value = scale()
    value.backward()
    assert scale.log_scale_bias.grad is not None and scale.log_scale_bias.grad.item() != 0.0  # not stuck at the cap


def test_configure_keeps_what_is_not_given_and_checks_values():
    scale = LogitScale(2.0, learnable=True, max_value=50.0)
    scale.configure(learnable=False)
    assert (scale.value, scale.learnable, scale.max_value) == (2.0, False, 50.0)
    scale.configure(value=4.0, max_value=None)
    assert (scale.value, scale.max_value) == (4.0, None)
    with pytest.raises(ValueError, match=r"above max_scale=3\.95"):
        scale.configure(value=5.0, learnable=True, max_value=PAPER_MAX_SCALE)
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        scale.configure(value=-1.0)
    with pytest.raises(ValueError, match="bias must be a finite number"):
        scale.configure_bias(math.nan)
    scale.configure_bias(-3.0, learnable=True)
    assert scale.bias == -3.0 and "logit_bias" in scale.learnable_parameters()
    scale.configure_bias(None)
    assert scale.bias is None and "logit_bias" not in scale.state_dict()


def test_the_pooling_owns_the_scale_saves_it_and_loads_it(tmp_path):
    pooling = ObliquePooling(8, num_tokens=2, token_dim=4, logit_scale=1.5, learnable_logit_scale=True,
                             max_logit_scale=PAPER_MAX_SCALE, logit_bias=-2.0)
    with torch.no_grad():
        pooling.temperature.log_scale_bias.fill_(math.log(2.5))  # as if trained
    pooling.save(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["logit_scale"] == 2.5 and config["learnable_logit_scale"] and config["max_logit_scale"] == 3.95
    assert config["logit_bias"] == -2.0 and not config["learnable_logit_bias"]
    loaded = ObliquePooling.load(str(tmp_path))
    assert (loaded.logit_scale, loaded.logit_bias, loaded.learnable_logit_scale) == (2.5, -2.0, True)
    torch.testing.assert_close(loaded.temperature.log_scale_bias, pooling.temperature.log_scale_bias, rtol=0, atol=0)


def test_training_outputs_carry_the_learned_temperature_per_row_and_inference_outputs_do_not():
    pooling = ObliquePooling(8, num_tokens=2, token_dim=4, token_source="split", learnable_logit_scale=True)
    features = {"token_embeddings": torch.randn(3, 5, 8), "attention_mask": torch.ones(3, 5)}
    out = pooling(dict(features))
    assert out["logit_scale"].shape == (3,) and out["logit_scale"].grad_fn is not None
    with torch.no_grad():
        assert "logit_scale" not in pooling(dict(features))
    assert "logit_scale" not in ObliquePooling(8, num_tokens=2, token_dim=4, token_source="split")(dict(features))


def test_oblique_trainer_excludes_the_temperature_from_decay_by_identity(tiny_bert_dir, tmp_path):
    from sentence_transformers import SentenceTransformerTrainingArguments

    model = st_oblique.oblique_text_model(tiny_bert_dir, num_tokens=2, token_dim=4)
    loss = st_oblique.ObliqueSigmoidLoss(model)  # learned scale and bias
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = st_oblique.ObliqueTrainer(model=model, args=args, loss=loss)
    names = trainer.get_decay_parameter_names(model)
    assert not [name for name in names if ".temperature." in name]
    assert "1.heads.default.projection" in names  # the rest is decayed as usual
    # Rename-proof: a temperature parameter without "bias" in its name is left out too, because it is the parameter.
    temperature = model[1].temperature
    renamed = nn.Parameter(temperature.log_scale_bias.detach().clone())
    del temperature.log_scale_bias
    temperature.register_parameter("log_value", renamed)
    assert "1.temperature.log_value" not in trainer.get_decay_parameter_names(model)
