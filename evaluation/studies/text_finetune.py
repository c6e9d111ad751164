"""Regime B of the topology study: fine-tune a text encoder on text pairs, mean pooling vs oblique heads.

- ``mnrl`` arms: the model as published (mean pooling + Normalize) with Sentence Transformers'
  ``MultipleNegativesRankingLoss`` (cosine, scale 20): what most Sentence Transformers users do.
- ``oblique`` arms: :func:`st_oblique.oblique_text_model` (K class tokens, ObliquePooling) with
  :class:`st_oblique.ObliqueContrastiveLoss`; with ``token_source="class_attention"`` the K class tokens join after
  the unchanged encoder (``class_attention_layers`` blocks of width ``class_attention_width``; at the encoder's width
  they start from its last layers).

Both are trained by ``SentenceTransformerTrainer`` on the same pairs, batches (same seed) and number of steps,
and evaluated with the project's MTEB harness (:func:`st_oblique.evaluation.run_mteb` on the offline tasks).

Example::

    arm = TextArm.from_config("oblique16", {"kind": "oblique", "num_tokens": 16, "token_dim": 24, "scale": 1.25})
    model, info = finetune(arm, "../shared/weights/all-MiniLM-L6-v2", pairs, TextTrainConfig(), seed=0)
    scores = evaluate_text_model(model, "oblique16-seed0", tasks)
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evaluation.studies.lit_heads import named_from_config, spec_without_unset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextArm:
    """One regime-B arm: ``kind`` is ``"untouched"`` (no training), ``"mnrl"`` or ``"oblique"``."""

    name: str
    kind: str
    num_tokens: int = 1
    token_dim: int = 384
    token_source: str = "first"
    scale: float = 20.0
    description: str = ""
    class_attention_layers: int | None = None
    class_attention_width: int | None = None

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> TextArm:
        arm = named_from_config(cls, name, config)
        if arm.kind not in ("untouched", "mnrl", "oblique"):
            raise ValueError(f"Text arm {name!r}: kind must be 'untouched', 'mnrl' or 'oblique', got {arm.kind!r}.")
        return arm

    def spec(self) -> dict[str, Any]:
        """The arm's part of a run specification (see :meth:`evaluation.studies.lit_heads.Arm.spec`)."""
        return spec_without_unset(self, ("class_attention_layers", "class_attention_width"))


@dataclass
class TextTrainConfig:
    """The budget of every regime-B arm (one epoch over the same pairs)."""

    batch_size: int = 32
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3
    warmup_ratio: float = 0.1


def build_text_model(arm: TextArm, model_path: str):
    """The arm's model and loss: (SentenceTransformer, MultipleNegativesRankingLoss) or the oblique pair."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    import st_oblique

    if arm.kind == "oblique":
        late = {
            f"class_attention_{key}": getattr(arm, f"class_attention_{key}")
            for key in ("layers", "width")
            if getattr(arm, f"class_attention_{key}") is not None
        }
        model = st_oblique.oblique_text_model(
            model_path,
            num_tokens=arm.num_tokens,
            token_dim=arm.token_dim,
            token_source=arm.token_source,
            **late,
        )
        return model, st_oblique.ObliqueContrastiveLoss(model, scale=arm.scale)
    model = SentenceTransformer(model_path)
    return model, (MultipleNegativesRankingLoss(model, scale=arm.scale) if arm.kind == "mnrl" else None)


def finetune(
    arm: TextArm,
    model_path: str,
    pairs: Sequence[tuple[str, str]],
    config: TextTrainConfig,
    seed: int,
    wrap_loss: Callable[[Any, Any], Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Build the arm's model (head initialised from ``seed``) and train it for one epoch over ``pairs``.

    Batches come from the trainer's sampler seeded with ``seed``, so the arms of a seed see the same batches. A new
    oblique head learns at ``head_learning_rate`` (``learning_rate_mapping``), the pretrained encoder at
    ``learning_rate``; the mean-pooling baseline has no head. ``wrap_loss(model, loss)`` returns the loss actually
    trained (e.g. a Matryoshka wrapper around the arm's loss; the nested-tokens study uses it).
    """
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import set_seed

    set_seed(seed)
    model, loss = build_text_model(arm, model_path)
    if arm.kind == "untouched":
        return model, {"train_seconds": 0.0, "steps": 0}
    if wrap_loss is not None:
        loss = wrap_loss(model, loss)
    dataset = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    with tempfile.TemporaryDirectory(prefix="topology-b-") as output_dir:
        args = pair_training_arguments(
            SentenceTransformerTrainingArguments,
            output_dir,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            learning_rate_mapping={r"heads\.": config.head_learning_rate} if arm.kind == "oblique" else {},
            warmup_ratio=config.warmup_ratio,
            seed=seed,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
        start = time.monotonic()
        trainer.train()
        seconds = time.monotonic() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return model, {"train_seconds": seconds, "steps": trainer.state.global_step, "loss_history": losses}


def pair_training_arguments(
    arguments_class: type,
    output_dir: str,
    *,
    batch_size: int,
    learning_rate: float,
    learning_rate_mapping: dict[str, float],
    warmup_ratio: float,
    seed: int,
    max_steps: int = -1,
):
    """The studies' training arguments: one epoch (or ``max_steps``) on CPU, batches and head from ``seed``, the last
    incomplete batch dropped, nothing saved or reported. ``arguments_class``: Sentence Transformers' training
    arguments class of the model type (e.g. ``SentenceTransformerTrainingArguments``)."""
    return arguments_class(
        output_dir=output_dir,
        num_train_epochs=1,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        learning_rate_mapping=learning_rate_mapping,
        warmup_steps=warmup_ratio,  # a float below 1: a fraction of the steps (Transformers 5)
        seed=seed,
        data_seed=seed,
        dataloader_drop_last=True,
        save_strategy="no",
        report_to="none",
        logging_steps=10,
        disable_tqdm=True,
        use_cpu=True,
    )


def evaluate_text_model(model, name: str, tasks: Sequence[Any], batch_size: int = 64) -> dict[str, dict[str, float]]:
    """Main scores (and the other first-split scores) of ``model`` on MTEB ``tasks``, via the project's harness."""
    from st_oblique.evaluation import run_mteb

    results = run_mteb(
        model, tasks, name=name, cache_dir=None, batch_size=batch_size, show_progress_bar=False, raise_error=True
    )
    return {result.dataset: result.metrics for result in results}


def text_tasks(task_settings: Mapping[str, Mapping[str, Any]], data_root: str) -> list[Any]:
    """The offline MTEB tasks with their subset sizes, e.g. ``{"LocalSciFact": {"max_samples": 100, "corpus_size": 150}}``."""
    from st_oblique.evaluation.mteb_tasks import LOCAL_TASKS

    unknown = [name for name in task_settings if name not in LOCAL_TASKS]
    if unknown:
        raise KeyError(f"Unknown local MTEB tasks {unknown}; known: {sorted(LOCAL_TASKS)}.")
    return [LOCAL_TASKS[name](data_root=data_root, **dict(settings or {})) for name, settings in task_settings.items()]
