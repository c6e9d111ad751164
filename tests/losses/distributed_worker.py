"""Run by tests/losses/test_distributed.py under ``torchrun --nproc_per_node 2`` (gloo, CPU); not a test module.

Usage: torchrun --standalone --nproc_per_node 2 distributed_worker.py TINY_BERT_DIR OUTPUT_DIR

Each rank writes ``OUTPUT_DIR/rank{r}.pt`` with what the test compares against a single process:

- ``embedding_level``: per loss, this rank's loss, the gradients of its local embeddings and of the learnable
  scale/bias, with ``gather_across_devices=True`` on a global batch that every rank builds from the same seed;
- ``cached_model``: CachedObliqueContrastiveLoss(gather_across_devices=True) on this rank's half of a text batch,
  with the model gradients averaged over the ranks as DDP does;
- ``trainer``: ObliqueTrainer, 2 steps with a learnable-scale gathered loss: the scale, a checksum of the
  parameters, the logged scale and the optimizer's weight decay of the scale;
- ``plain_trainer``: a plain SentenceTransformerTrainer, 3 steps with a checkpoint at step 2: the scale on each rank,
  the scale saved in the checkpoint, the scale's weight decay.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, as under pytest

from losses.loss_cases import GLOBAL_BATCH, embedding_cases, global_embeddings, oblique_model, text_batch


def embedding_level(rank: int, world_size: int) -> dict:
    results = {}
    local = GLOBAL_BATCH // world_size
    for name, make_loss in embedding_cases().items():
        columns = global_embeddings(num_columns=3 if "negatives" in name else 2)
        leaves = [column[rank * local : (rank + 1) * local].clone().requires_grad_() for column in columns]
        loss = make_loss(gather_across_devices=True)
        value = loss.compute_loss_from_embeddings(leaves)
        value.backward()
        results[name] = {
            "loss": value.detach(),
            "embedding_grads": [leaf.grad for leaf in leaves],
            "parameter_grads": {key: p.grad for key, p in loss.temperature_parameters().items()},
        }
    return results


def cached_model(tiny_bert_dir: str, rank: int, world_size: int) -> dict:
    from st_oblique import CachedObliqueContrastiveLoss

    # eval: no dropout, so the single-process reference sees the same network; float64: no rounding differences
    model = oblique_model(tiny_bert_dir).eval().double()
    loss = CachedObliqueContrastiveLoss(
        model, scale=2.0, learnable_scale=True, gather_across_devices=True, mini_batch_size=3
    ).double()
    columns = text_batch()
    local = len(columns[0]) // world_size
    features = [model.preprocess(column[rank * local : (rank + 1) * local]) for column in columns]
    value = loss(features, None)
    (0.5 * value).backward()
    grads = {}
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            grad = parameter.grad.clone()
            dist.all_reduce(grad)
            grads[name] = grad / world_size
    return {"loss": value.detach(), "model_grads": grads, "scale_grad": loss.logit_scale.log_scale_bias.grad}


def trainer_run(tiny_bert_dir: str, output_dir: str) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainingArguments

    from st_oblique import ObliqueContrastiveLoss

    model = oblique_model(tiny_bert_dir)
    loss = ObliqueContrastiveLoss(model, scale=2.0, learnable_scale=True, gather_across_devices=True)
    anchors, positives = text_batch()[:2]
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2, weight_decay=0.1,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, dataloader_drop_last=True,
    )
    dataset = Dataset.from_dict({"anchor": anchors, "positive": positives})
    from st_oblique import ObliqueTrainer

    trainer = ObliqueTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    trainer.train()
    group = next(g for g in trainer.optimizer.param_groups if any(p is loss.logit_scale.log_scale_bias for p in g["params"]))
    return {
        "global_step": trainer.state.global_step,
        "scale": loss.scale,
        "logged_scales": [log["logit_scale"] for log in trainer.state.log_history if "logit_scale" in log],
        "scale_weight_decay": group["weight_decay"],
        "parameter_checksum": sum(p.detach().double().sum().item() for p in model.parameters()),
        "recorded_scale": model[1].logit_scale,
    }


def plain_trainer_run(tiny_bert_dir: str, output_dir: str) -> dict:
    """A plain SentenceTransformerTrainer (no st-oblique callback or optimizer grouping): 3 steps, a checkpoint at 2."""
    import json

    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    from st_oblique import ObliqueContrastiveLoss

    model = oblique_model(tiny_bert_dir)
    loss = ObliqueContrastiveLoss(model, scale=2.0, learnable_scale=True, gather_across_devices=True)
    anchors, positives = text_batch()[:2]
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=2, max_steps=3, learning_rate=1e-2, weight_decay=0.1,
        logging_steps=1, save_strategy="steps", save_steps=2, report_to=[], use_cpu=True, seed=0,
        dataloader_drop_last=True,
    )
    scales = {}

    class RecordScale(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            scales[state.global_step] = loss.scale

    dataset = Dataset.from_dict({"anchor": anchors, "positive": positives})
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[RecordScale()])
    trainer.train()
    group = next(g for g in trainer.optimizer.param_groups if any(p is loss.logit_scale.log_scale_bias for p in g["params"]))
    modules = json.loads(Path(output_dir, "checkpoint-2", "modules.json").read_text())
    pooling = next(entry["path"] for entry in modules if entry["type"].endswith("ObliquePooling"))
    config = json.loads(Path(output_dir, "checkpoint-2", pooling, "config.json").read_text())
    return {
        "global_step": trainer.state.global_step,
        "scale": loss.scale,
        "scale_at_step_2": scales[2],
        "checkpoint_scale": config["logit_scale"],
        "scale_weight_decay": group["weight_decay"],
        "parameter_checksum": sum(p.detach().double().sum().item() for p in model.parameters()),
    }


def main() -> None:
    tiny_bert_dir, output_dir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    results = {"trainer": trainer_run(tiny_bert_dir, os.path.join(output_dir, "trainer"))}
    # The trainer set up the gloo process group (accelerate); the loss checks reuse it.
    rank, world_size = dist.get_rank(), dist.get_world_size()
    results["embedding_level"] = embedding_level(rank, world_size)
    results["cached_model"] = cached_model(tiny_bert_dir, rank, world_size)
    results["plain_trainer"] = plain_trainer_run(tiny_bert_dir, os.path.join(output_dir, "plain_trainer"))
    torch.save(results, os.path.join(output_dir, f"rank{rank}.pt"))
    dist.barrier()


if __name__ == "__main__":
    main()
