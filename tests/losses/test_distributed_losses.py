"""gather_across_devices on 2 CPU processes (gloo, torchrun) equals one process on the concatenated batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from losses.loss_cases import embedding_cases, global_embeddings, oblique_model, text_batch

from st_oblique import ObliqueContrastiveLoss

WORLD_SIZE = 2
WORKER = Path(__file__).with_name("distributed_worker.py")

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)


@pytest.fixture(scope="module")
def ranks(tiny_bert_dir, tmp_path_factory) -> list[dict]:
    """Run distributed_worker.py on 2 processes once; the results of each rank."""
    output_dir = tmp_path_factory.mktemp("distributed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD_SIZE}",
        str(WORKER), tiny_bert_dir, str(output_dir),
    ]
    result = subprocess.run(command, cwd=output_dir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return [torch.load(output_dir / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


@pytest.mark.parametrize("case", list(embedding_cases()))
def test_gathered_loss_and_gradients_equal_one_process(ranks, case):
    make_loss = embedding_cases()[case]
    columns = [c.requires_grad_() for c in global_embeddings(num_columns=3 if "negatives" in case else 2)]
    loss = make_loss(gather_across_devices=False)
    value = loss.compute_loss_from_embeddings(columns)
    parameters = loss.temperature_parameters()
    grads = torch.autograd.grad(value, [*columns, *parameters.values()])
    embedding_grads, parameter_grads = grads[: len(columns)], dict(zip(parameters, grads[len(columns) :], strict=True))

    results = [rank["embedding_level"][case] for rank in ranks]
    # the global loss is the mean of the per-process losses (equal batch sizes)
    torch.testing.assert_close(torch.stack([r["loss"] for r in results]).mean(), value.detach(), rtol=1e-6, atol=1e-9)
    # all_gather's backward sums every process's gradient for the local rows: WORLD_SIZE x d(mean loss)/d(rows)
    for column, expected in enumerate(embedding_grads):
        gathered = torch.cat([r["embedding_grads"][column] for r in results]) / WORLD_SIZE
        torch.testing.assert_close(gathered, expected, rtol=1e-6, atol=1e-9)
    # the scale and bias are the model's parameters: DDP averages their per-process gradients like every other
    # parameter's, which gives the gradient of the mean loss (the single process's), identical on every process
    for name, expected in parameter_grads.items():
        averaged = torch.stack([r["parameter_grads"][name].double() for r in results]).mean(dim=0)
        torch.testing.assert_close(averaged, expected.double(), rtol=1e-5, atol=1e-9)


def test_cached_gathered_loss_with_ddp_averaging_equals_one_process(ranks, tiny_bert_dir):
    model = oblique_model(tiny_bert_dir).eval().double()
    loss = ObliqueContrastiveLoss(model, scale=2.0, learnable_scale=True).double()
    value = loss([model.preprocess(column) for column in text_batch()], None)
    (0.5 * value).backward()

    results = [rank["cached_model"] for rank in ranks]
    torch.testing.assert_close(torch.stack([r["loss"] for r in results]).mean(), value.detach(), rtol=1e-8, atol=1e-10)
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(results[0]["model_grads"][name], parameter.grad, rtol=1e-5, atol=1e-12)
    # the scale is one of the model's parameters: averaged like them (above), and named like them
    assert "1.temperature.log_scale_bias" in results[0]["model_grads"]
    averaged = torch.stack([r["scale_grad"] for r in results]).mean()
    torch.testing.assert_close(averaged, loss.logit_scale.log_scale_bias.grad, rtol=1e-6, atol=1e-12)


def test_trainer_runs_two_steps_on_two_processes_and_keeps_them_in_sync(ranks):
    first, second = (rank["trainer"] for rank in ranks)
    assert first["global_step"] == second["global_step"] == 2
    assert first["scale"] == second["scale"] != 2.0  # learned, and identical on both processes
    assert first["parameter_checksum"] == pytest.approx(second["parameter_checksum"], rel=1e-9, abs=1e-9)
    assert first["scale_weight_decay"] == 0.0
    assert first["recorded_scale"] == first["scale"]
    assert len(first["logged_scales"]) == 2 and first["logged_scales"][-1] == first["scale"]


def test_a_plain_trainer_keeps_the_scale_in_sync_and_saves_it(ranks):
    first, second = (rank["plain_trainer"] for rank in ranks)
    assert first["global_step"] == second["global_step"] == 3
    assert first["scale"] == second["scale"] != 2.0  # learned by DDP's averaged gradient, identical on both ranks
    assert first["parameter_checksum"] == pytest.approx(second["parameter_checksum"], rel=1e-9, abs=1e-9)
    assert first["scale_weight_decay"] == 0.0  # the name rule of transformers' decay grouping
    assert first["checkpoint_scale"] == first["scale_at_step_2"] != first["scale"]  # saved with the checkpoint
