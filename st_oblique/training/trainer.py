"""ObliqueTrainer: Sentence Transformers' trainer with the learnable temperature in its logs, its training data and
checkpoints checked before the first step, and the one checkpoint-resume path of st-oblique.

A plain ``SentenceTransformerTrainer`` (or ``model.fit``) already trains oblique models fully: the losses are
ordinary Sentence Transformers losses, and the logit scale is a parameter of the model (``ObliquePooling.temperature``),
so it is trained without weight decay, saved with the model and its checkpoints, restored on resume and all-reduced
under DDP. This subclass adds :class:`~st_oblique.training.logit_scale_callback.LogitScaleCallback` (the scale and
SigLIP's bias in the logs), :func:`check_training_dataset` on its datasets (an empty one included), the resolution and
check of a checkpoint to resume from (:func:`resolve_checkpoint`, :func:`check_checkpoint`), and no half-written
checkpoint left behind by an interrupted or failed run. ``st-oblique train`` uses it.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.base.model_card import get_losses
from torch import nn
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from st_oblique.data.training_data_checks import LABEL_COLUMNS, check_training_dataset, datasets_checked
from st_oblique.errors import CheckpointError
from st_oblique.losses.matryoshka import check_no_sentence_transformers_matryoshka
from st_oblique.model.files import module_folders
from st_oblique.modules.shape import model_temperature, oblique_shape
from st_oblique.training.logit_scale_callback import LogitScaleCallback

__all__ = ["LABEL_COLUMNS", "ObliqueTrainer", "check_checkpoint", "check_training_dataset", "resolve_checkpoint"]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last"
"""``resume_from_checkpoint="last"`` (or ``True``): the newest checkpoint in the output folder."""


class ObliqueTrainer(SentenceTransformerTrainer):
    """:class:`~sentence_transformers.SentenceTransformerTrainer` for oblique models (same arguments).

    Differences:

    - a :class:`~st_oblique.training.logit_scale_callback.LogitScaleCallback` logs the model's learnable
      ``logit_scale`` (and ``logit_bias``) with the training loss, before the reporting integrations see the logs
      (W&B, TensorBoard...);
    - :meth:`get_decay_parameter_names` leaves the model's temperature out of weight decay by identity (plain
      trainers leave it out by its name, see :class:`~st_oblique.modules.logit_scale.LogitScale`);
    - the datasets are checked before training (:func:`check_training_dataset`: empty, ``None`` values, numeric
      columns...), and ST's ``MatryoshkaLoss`` is refused on oblique models;
    - ``train(resume_from_checkpoint=...)`` accepts ``True`` or ``"last"`` for the newest checkpoint in
      ``args.output_dir`` and refuses a checkpoint of another model before anything runs (:func:`check_checkpoint`);
    - an interrupted or failed run removes the checkpoint folder it was writing.

    Example::

        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainingArguments
        import st_oblique

        model = st_oblique.oblique_text_model("sentence-transformers/all-MiniLM-L6-v2", num_tokens=16, token_dim=32)
        train = Dataset.from_dict({"anchor": ["A man eats.", "A dog runs."], "positive": ["Someone eats.", "A dog is running."]})
        loss = st_oblique.ObliqueContrastiveLoss(model, learnable_scale=True, max_scale=3.95)
        args = SentenceTransformerTrainingArguments(output_dir="out", logging_steps=1)
        trainer = st_oblique.ObliqueTrainer(model=model, args=args, train_dataset=train, loss=loss)
        trainer.train()
        print(trainer.state.log_history[-2]["logit_scale"])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Checked before Sentence Transformers' constructor, which already reads rows (for the model card).
        given = inspect.signature(SentenceTransformerTrainer.__init__).bind_partial(self, *args, **kwargs).arguments
        for name in ("train_dataset", "eval_dataset"):
            if given.get(name) is not None:
                check_training_dataset(given[name], name=name, loss=given.get("loss"))
        if given.get("loss") is not None and given.get("model") is not None:
            # Also for oblique models whose card data is Sentence Transformers' own (which does not check).
            losses = given["loss"].values() if isinstance(given["loss"], dict) else [given["loss"]]
            check_no_sentence_transformers_matryoshka([f for loss in losses for f in get_losses(loss)], given["model"])
        training_args = given.get("args")
        output_dir = getattr(training_args, "output_dir", None)
        # The trainer may create its output folder at once; a failed run removes it again only if it was new.
        self._st_oblique_new_output_dir = output_dir is not None and not Path(output_dir).exists()
        with datasets_checked():
            super().__init__(*args, **kwargs)
        # Right after DefaultFlowCallback, as SparseEncoderTrainer places its SpladeLoss callback: on_log then runs
        # before the reporting callbacks, which log the scale too.
        self.callback_handler.callbacks.insert(1, LogitScaleCallback())

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """transformers' decay names, without the oblique model's logit scale and bias (matched by identity)."""
        names = super().get_decay_parameter_names(model)
        if oblique_shape(model) is None:
            return names
        temperature = {id(parameter) for parameter in model_temperature(model).parameters()}
        excluded = {name for name, parameter in model.named_parameters() if id(parameter) in temperature}
        return [name for name in names if name not in excluded]

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``SentenceTransformerTrainer.train``, after resolving and checking the checkpoint to resume from (see
        :func:`resolve_checkpoint`, :func:`check_checkpoint`); an interrupted or failed run removes the checkpoint
        folder it was writing (and ``args.output_dir`` if it created it and left it empty).

        Raises:
            CheckpointError: ``resume_from_checkpoint`` is not a checkpoint, or one of another model.
        """
        output_dir = Path(self.args.output_dir)
        checkpoint = resolve_checkpoint(output_dir, resume_from_checkpoint)
        if checkpoint is not None:
            check_checkpoint(checkpoint, self.model)
        new_folder = self._st_oblique_new_output_dir or not output_dir.exists()
        before = set(output_dir.iterdir()) if output_dir.is_dir() else set()
        try:
            return super().train(None if checkpoint is None else str(checkpoint), *args, **kwargs)
        except BaseException:
            if self.is_world_process_zero():
                _remove_half_written_checkpoints(output_dir, before, remove_folder=new_folder)
            raise


def resolve_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | os.PathLike | bool | None) -> Path | None:
    """The checkpoint folder to resume from: ``True`` or ``"last"`` is the newest ``checkpoint-<step>`` in
    ``output_dir``, a path is itself, ``None``/``False`` is none.

    Raises:
        CheckpointError: ``"last"`` but no checkpoint in ``output_dir``.
    """
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True or resume_from_checkpoint == LAST_CHECKPOINT:
        folder = Path(output_dir)
        last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
        if last is None:
            raise CheckpointError(
                f"No checkpoint to resume from in {folder}: train with checkpoints first (save_strategy='steps', "
                "or --save-steps N on the command line), or pass the checkpoint folder."
            )
        return Path(last)
    return Path(resume_from_checkpoint).expanduser()


def check_checkpoint(checkpoint: str | os.PathLike, model: nn.Module) -> None:
    """Raise :class:`CheckpointError` unless ``checkpoint`` is a complete trainer checkpoint of a model with the
    same modules and tensor shapes as ``model`` (read from the safetensors headers, no weights loaded)."""
    folder = Path(checkpoint).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"Checkpoint not found: {folder}.")
    if not (folder / TRAINER_STATE_NAME).is_file():
        raise CheckpointError(
            f"{folder} is not a complete training checkpoint (no {TRAINER_STATE_NAME}); pass a checkpoint-<step> "
            "folder written by the trainer."
        )
    if not (folder / "modules.json").is_file():
        return  # not a Sentence Transformers save: leave it to the trainer
    try:
        folders = module_folders(folder)
    except Exception as error:
        raise CheckpointError(f"Cannot resume from {folder}: {error}") from error
    children = list(model.children())
    if len(folders) != len(children):
        raise CheckpointError(
            f"Cannot resume from {folder}: it holds a model of {len(folders)} modules, this model has {len(children)}; "
            "resume with the model that wrote it, or train without resume_from_checkpoint."
        )
    for index, (module_folder, child) in enumerate(zip(folders, children, strict=True)):
        shapes = {key: tuple(value.shape) for key, value in child.state_dict().items()}
        for path in sorted(module_folder.glob("*.safetensors")):
            for key, saved in _safetensors_shapes(path).items():
                own = next((name for name in shapes if name == key or name.endswith("." + key)), None)
                if own is not None and shapes[own] != saved:
                    raise CheckpointError(
                        f"Cannot resume from {folder}: it holds another model: {path.relative_to(folder)} has "
                        f"{key!r} of shape {saved}, this model's module {index} ({type(child).__name__}) has "
                        f"{shapes[own]} (another num_tokens, token_dim or backbone?). Resume with the settings of the "
                        "run that wrote it, or train without resume_from_checkpoint."
                    )


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"Cannot resume from {path.parent}: {path} is not readable ({error}).") from error


def _remove_half_written_checkpoints(output_dir: Path, before: set[Path], *, remove_folder: bool) -> None:
    """After a failed or interrupted run: remove the checkpoint folders it created without a trainer state, and
    ``output_dir`` itself when ``remove_folder`` and nothing else is left in it."""
    if not output_dir.is_dir():
        return
    for path in set(output_dir.iterdir()) - before:
        if path.is_dir() and path.name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and not (path / TRAINER_STATE_NAME).is_file():
            logger.warning(f"Removing the half-written checkpoint {path}.")
            shutil.rmtree(path, ignore_errors=True)
    if remove_folder and not any(output_dir.iterdir()):
        output_dir.rmdir()
