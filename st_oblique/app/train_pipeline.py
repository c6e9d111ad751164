"""The ``st-oblique train`` pipeline: build an oblique model, train it with :class:`~st_oblique.ObliqueTrainer` (Sentence Transformers' trainer), evaluate
it with the evaluation harness, and save model, card, report and plot into one output folder.

Everything a run needs is one :class:`TrainConfig` (every field is also a command-line option and a key of a
``--config`` file). :func:`train` runs it:

1. checks the configuration, the output folder (before anything is loaded) and the evaluation sets;
2. builds the model (:func:`build_model`: HF CLIP, open_clip, a text encoder, or text + image towers), freezes
   what is asked (:func:`freeze_parameters`, e.g. a LiT-style locked image tower), loads and checks the data
   (:mod:`st_oblique.app.train_data`) and builds the loss (:func:`build_loss`);
3. optionally evaluates the untrained model, trains through ``SentenceTransformerTrainer`` (so ``accelerate
   launch`` and ``torchrun`` work unchanged; progress bars and logs show the loss and the learned scale), and
   evaluates the trained model;
4. writes into a staging folder that becomes ``output_dir`` only when everything succeeded
   (:mod:`st_oblique.output_folder`): the model with its card (``README.md``), ``train_config.yaml`` (the resolved
   configuration, usable as ``--config``), ``training_report.json``, ``training.png`` (loss and scale curves,
   scores), ``eval/`` (and ``eval_untrained/``) from the evaluation harness;
5. optionally pushes the model to the Hub.

Example::

    from st_oblique.app.train_pipeline import TrainConfig, train

    config = TrainConfig(
        backbone="dual", text_model="../shared/weights/all-MiniLM-L6-v2",
        image_model="../shared/weights/tf_efficientnet_lite0", lock_image_tower=True,
        captions="../shared/data/flickr8k_1k/captions.tsv",
        images="../shared/data/flickr8k_1k/flickr8k_1k_images_256.tar",
        eval_datasets=["imagenette"], data_root="../shared/data", output_dir="runs/lit-oblique",
    )
    result = train(config)
    print(result.output_dir, result.report["evaluation"])
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import open_clip
import torch
import torch.distributed
import transformers
from sentence_transformers import SentenceTransformerTrainingArguments
from transformers import TrainerCallback, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

import st_oblique
from st_oblique._version import __version__, package_versions
from st_oblique.app.options import read_config_file, write_config_file
from st_oblique.app.train_config import MODEL_DEFINING_OPTIONS, TrainConfig
from st_oblique.app.train_data import TrainingData, check_modalities, load_training_data
from st_oblique.app.train_report import plot_training, score_table, token_collapse_report, training_curves
from st_oblique.builders.families import BACKBONE_FAMILIES
from st_oblique.errors import CheckpointError, ObliqueConfigError, ObliqueLoadError, PushAfterTrainingError, one_line
from st_oblique.evaluation import ClassificationDataset, load_dataset
from st_oblique.evaluation.chance import chance_levels
from st_oblique.evaluation.report import PLOT_METRICS
from st_oblique.model.card import set_evaluation_results
from st_oblique.model.description import describe_model
from st_oblique.model.push import push_to_hub
from st_oblique.modules.tower_lock import lock_tower
from st_oblique.output_folder import staged_output_dir
from st_oblique.training.trainer import ObliqueTrainer, check_checkpoint
from st_oblique.training.trainer import resolve_checkpoint as resolve_trainer_checkpoint
from st_oblique.validators import parse_token_counts

if TYPE_CHECKING:
    from torch import nn

    from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer

__all__ = [
    "CONFIG_FILE",
    "CheckpointError",
    "ObliqueLoadError",
    "PushAfterTrainingError",
    "TrainConfig",
    "TrainResult",
    "build_loss",
    "build_model",
    "check_resume_checkpoint",
    "freeze_parameters",
    "train",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "train_config.yaml"
"""The resolved configuration, written next to the model and into every checkpoint."""
REPORT_FILE = "training_report.json"
PLOT_FILE = "training.png"

@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        output_dir: the final output folder.
        model: the trained model (in memory).
        report: the content of ``training_report.json``.
        files: ``{"model", "card", "config", "report", "plot", "eval", ...}`` paths.
        hub_url: the commit URL when the model was pushed.
    """

    output_dir: Path
    model: ObliqueSentenceTransformer
    report: dict[str, Any]
    files: dict[str, Path]
    hub_url: str | None = None


def build_model(config: TrainConfig) -> ObliqueSentenceTransformer:
    """The untrained oblique model described by ``config`` (see the ``model`` options of :class:`TrainConfig`),
    built by its backbone family's builder (:data:`~st_oblique.builders.families.BACKBONE_FAMILIES`).

    Raises:
        ObliqueLoadError: the backbone cannot be loaded or is not the kind ``config.backbone`` says.
    """
    family = BACKBONE_FAMILIES[str(config.backbone)]
    for option in family.arguments:
        _check_local_path(option, getattr(config, option))
    if config.open_clip_config:  # a custom architecture, registered under its file name (the resolved --model)
        register_open_clip_config(config.open_clip_config)
    values = config.resolved().to_dict()
    arguments, options = family.builder_arguments(values)
    options.update(num_tokens=config.num_tokens, token_dim=config.token_dim, device=config.device,
                   per_token_projection=config.per_token_projection)
    if config.layer_norm is not None:
        options["layer_norm"] = config.layer_norm
    try:
        return family.load_builder()(*arguments, **options)
    except ObliqueLoadError:
        raise
    except Exception as error:
        name = " + ".join(str(values[option]) for option in family.required)
        raise ObliqueLoadError(
            f"Cannot build the {family.name} backbone from {name!r}: {one_line(error, quoted=True)}. {family.hint}"
        ) from error


def register_open_clip_config(path: str | Path) -> str:
    """Register a custom open_clip architecture (a JSON file with ``embed_dim``, ``vision_cfg``, ``text_cfg``) with
    ``open_clip.add_model_config``; returns its name (the file name without ``.json``)."""

    path = Path(path)
    if not path.is_file():
        raise ObliqueLoadError(f"open_clip config file not found: {path}")
    try:
        architecture = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ObliqueLoadError(f"Cannot read the open_clip config {path}: {one_line(error, quoted=True)}") from error
    missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in architecture]
    if missing:
        raise ObliqueLoadError(f"The open_clip config {path} lacks {missing}; see open_clip's model_configs/*.json.")
    open_clip.add_model_config(path)
    return path.stem


def freeze_parameters(
    model: nn.Module, *, lock_image_tower: bool = False, lock_text_tower: bool = False, patterns: list[str] = ()
) -> dict[str, int]:
    """Freeze pretrained towers and parameters matching regular expressions.

    A locked tower gets ``requires_grad=False`` and stays in eval mode during training (its BatchNorm statistics
    and dropout are those of the pretrained model, as in LiT); new parameters (extra class tokens, the oblique
    heads) keep training. The lock is recorded in the model (the input module's ``locked_towers``, see
    :func:`st_oblique.modules.tower_lock.lock_tower`), so the saved model loads with the tower locked; parameters
    frozen by ``patterns`` are not recorded (``training_report.json`` counts them).

    Returns:
        The run's parameter account, in scalars, adding up to ``total``: ``trainable`` (trained by the run),
        ``frozen`` (frozen by the run: locked towers and ``patterns``) and ``not_trainable`` (already without
        gradient in the model as built: parameters the oblique model does not use, e.g. open_clip's own projection).

    Raises:
        ObliqueConfigError: a pattern that matches no parameter.
    """
    frozen_ids: set[int] = set()
    for modality, locked in (("image", lock_image_tower), ("text", lock_text_tower)):
        if not locked:
            continue
        try:
            parameters = lock_tower(model, modality)
        except ValueError as error:
            raise ObliqueConfigError(str(error)) from error
        frozen_ids.update(id(parameter) for parameter in parameters)
    named = list(model.named_parameters())
    for pattern in patterns:
        expression = re.compile(pattern)
        matches = [parameter for name, parameter in named if expression.search(name)]
        if not matches:
            examples = ", ".join(name for name, _ in named[:3])
            raise ObliqueConfigError(f"--freeze {pattern!r} matches no parameter name (names look like {examples}).")
        for parameter in matches:
            parameter.requires_grad_(False)
            frozen_ids.add(id(parameter))
    trainable = sum(parameter.numel() for _, parameter in named if parameter.requires_grad)
    if trainable == 0:
        raise ObliqueConfigError("Every parameter is frozen; unlock a tower or remove a --freeze pattern.")
    frozen = sum(parameter.numel() for _, parameter in named if id(parameter) in frozen_ids)
    total = sum(parameter.numel() for _, parameter in named)
    return {"total": total, "trainable": trainable, "frozen": frozen, "not_trainable": total - trainable - frozen}


def build_loss(model: ObliqueSentenceTransformer, config: TrainConfig) -> nn.Module:
    """The loss named by ``config.loss`` with the scale options of ``config``, inside ObliqueMatryoshkaLoss with
    ``--nested-tokens``."""

    options = {
        "scale": config.scale,
        "learnable_scale": config.learnable_scale,
        "max_scale": config.max_scale,
        "gather_across_devices": config.gather_across_devices,
    }
    if config.loss == "sigmoid":
        loss = st_oblique.ObliqueSigmoidLoss(model, **options)
    elif config.loss == "cached":
        loss = st_oblique.CachedObliqueContrastiveLoss(model, mini_batch_size=config.mini_batch_size, **options)
    else:
        loss = st_oblique.ObliqueContrastiveLoss(model, **options)
    if config.nested_tokens is None:
        return loss
    counts = parse_token_counts(config.nested_tokens, config.num_tokens)
    return st_oblique.ObliqueMatryoshkaLoss(model, loss, token_counts=counts)


def resolve_checkpoint(config: TrainConfig) -> Path | None:
    """The checkpoint to resume from (``"last"``: the newest in ``config.checkpoints_path``), or None; resolved by the
    library's one resume path (:func:`st_oblique.training.trainer.resolve_checkpoint`).

    Raises:
        CheckpointError: no checkpoint there.
    """
    return resolve_trainer_checkpoint(config.checkpoints_path, config.resume_from_checkpoint or None)


def check_resume_checkpoint(checkpoint: Path, config: TrainConfig) -> None:
    """Raise :class:`CheckpointError` when ``checkpoint`` was written with other model-defining options
    (:data:`MODEL_DEFINING_OPTIONS`, read from its ``train_config.yaml``).

    This is the application's own check, which names the options as typed; that the checkpoint is a complete one of
    a model with the same tensors is checked by :class:`~st_oblique.ObliqueTrainer` when it resumes.
    """
    saved_config = checkpoint / CONFIG_FILE
    if not saved_config.is_file():
        return
    saved = read_config_file(saved_config)
    current = config.to_dict()
    differences = [key for key in MODEL_DEFINING_OPTIONS if key in saved and saved[key] != current[key]]
    if differences:
        listed = ", ".join(f"{key}={saved[key]!r} there but {current[key]!r} here" for key in differences)
        raise CheckpointError(
            f"Cannot resume from {checkpoint}: it was trained with other settings ({listed}); resume with that "
            f"run's settings (--config {saved_config}) or start without --resume-from-checkpoint."
        )


def training_arguments(config: TrainConfig, output_dir: Path, train_data: TrainingData | None = None) -> Any:
    """The ``SentenceTransformerTrainingArguments`` of a run (``config.training_arguments`` override them).

    For streamed data (``train_data.streaming``), every process of a multi-process run reads its own shards:
    ``dispatch_batches=False`` makes accelerate shard a ``datasets.IterableDataset`` with at least as many shards
    as processes by shard (``dataset.shard(num_processes, rank)``) instead of reading it in the main process and
    sending each process its batches. With fewer shards than processes, accelerate makes every process read every
    shard and keep its own slice of each batch (correct, but each process decodes everything): a warning says so.
    """

    # Without an accelerator, use_cpu=True is also what makes `accelerate launch`/`torchrun` processes train
    # together (gloo); otherwise transformers sees a distributed launch on CPU as single-process training.
    has_accelerator = torch.cuda.is_available() or torch.backends.mps.is_available()
    use_cpu = config.device == "cpu" or (config.device is None and not has_accelerator)
    arguments: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": config.batch_size,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps if config.max_steps is not None else -1,
        "learning_rate": config.learning_rate,
        "warmup_steps": int(config.warmup) if config.warmup >= 1 else float(config.warmup),
        "weight_decay": config.weight_decay,
        "seed": config.seed,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps" if config.save_steps else "no",
        "save_steps": config.save_steps or 500,
        "save_total_limit": config.save_total_limit,
        "dataloader_drop_last": True,  # a last batch of one row has no negatives; gathering needs equal batches
        "dataloader_num_workers": config.dataloader_num_workers,
        "report_to": "none",
        "disable_tqdm": not config.progress,
        "use_cpu": use_cpu,
        "dataloader_pin_memory": torch.cuda.is_available() and not use_cpu,
    }
    if train_data is not None and train_data.streaming:
        arguments["accelerator_config"] = {"dispatch_batches": False}
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if train_data.num_shards < processes:
            logger.warning(
                "The training data has %d shard(s) for %d processes: every process reads all of them. Write at least "
                "one shard per process (e.g. img2dataset's --number_sample_per_shard) so that each reads its own.",
                train_data.num_shards, processes,
            )
    if train_data is not None and train_data.image_columns:
        # Image-text batches run the model twice per step (images, then captions), each call through other
        # parameters. With find_unused_parameters (transformers' default for models that are not PreTrainedModels)
        # DDP marks the parameters the second call does not reach (the image tower and head) ready at that forward
        # and again when the loss's backward reaches them: "marked as ready twice". Every trainable parameter gets
        # a gradient in each image-text step, so the search is not needed (and costs a graph traversal per call).
        arguments["ddp_find_unused_parameters"] = False
    if config.scale_learning_rate is not None:
        # The model's temperature: ObliquePooling.temperature.log_scale_bias (and a sigmoid loss's logit_bias).
        arguments["learning_rate_mapping"] = {r"\.temperature\.": config.scale_learning_rate}
    arguments.update(config.training_arguments or {})
    try:
        return SentenceTransformerTrainingArguments(**arguments)
    except (TypeError, ValueError) as error:
        raise ObliqueConfigError(f"Invalid training arguments: {one_line(error, quoted=True)}") from error


def check_eval_sets(config: TrainConfig) -> dict[str, float]:
    """Load every evaluation set once (so a typo fails before training) and return chance levels of the plotted
    scores: ``{"<dataset> acc1": 1 / classes, "<dataset> <retrieval>@1": 1 / images}``."""

    unknown = set(config.eval_paths) - set(config.eval_datasets)
    if unknown:
        raise ObliqueConfigError(f"--eval-dataset-path names datasets that are not evaluated: {sorted(unknown)}.")
    chance = {}
    for name in config.eval_datasets:
        data = load_dataset(name, config.eval_paths.get(name), data_root=config.data_root,
                            max_samples=config.eval_max_samples)
        plotted = ("acc1",) if isinstance(data, ClassificationDataset) else PLOT_METRICS["zeroshot_retrieval"]
        chance.update({f"{data.name} {metric}": chance_levels(data)[metric] for metric in plotted})
    if config.mteb_tasks:
        # Imported here: mteb takes seconds to import (~10 s cold on a loaded 2-core machine), which a run
        # without MTEB tasks should not pay before its first step.
        from st_oblique.evaluation.mteb_runner import resolve_mteb_tasks

        resolve_mteb_tasks(config.mteb_tasks, data_root=config.data_root, max_samples=config.eval_max_samples)
    return chance


def evaluate(model: ObliqueSentenceTransformer, name: str, config: TrainConfig, output_dir: Path,
             command: str | None) -> list:
    """Evaluate ``model`` on the configured sets with the evaluation harness (writes into ``output_dir``)."""

    if not (config.eval_datasets or config.mteb_tasks):
        return []
    from st_oblique.evaluation import run_evaluation  # imports mteb (see check_eval_sets)

    return run_evaluation(
        [(name, model)],
        datasets=config.eval_datasets,
        mteb_tasks=config.mteb_tasks,
        output_dir=output_dir,
        dataset_paths=config.eval_paths,
        data_root=config.data_root,
        max_samples=config.eval_max_samples,
        batch_size=config.eval_batch_size,
        templates=config.eval_templates or None,
        show_progress_bar=config.progress,
        title=name,
        command=command,
        # a model trained at nested token prefixes is evaluated at each of them (one result row per k)
        token_counts=parse_token_counts(config.nested_tokens, config.num_tokens) if config.nested_tokens else None,
    )


def train(
    config: TrainConfig,
    *,
    train_data: TrainingData | None = None,
    command: str | None = None,
    before_commit: Callable[[TrainResult], None] | None = None,
) -> TrainResult | None:
    """Run ``config`` end to end (see the module docstring).

    Args:
        config: the run.
        train_data: training data built in memory (instead of the config's data options).
        command: the command line, recorded in the report, the evaluation summary and the card.
        before_commit: called with the result while its files are still in the staging folder
            (``result.output_dir``), to add files or checks; an exception there discards the run.

    Returns:
        The result on the main process; None on the other processes of a distributed run.

    Raises:
        ObliqueConfigError, ObliqueLoadError, CheckpointError, st_oblique.app.train_data.TrainingDataError,
        st_oblique.output_folder.OutputDirError: bad input, found before training where possible. Nothing is
        written into ``output_dir`` unless the whole run succeeds.
    """
    config = config.resolved()
    config.validate(has_data=train_data is not None)
    if not config.progress:

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    is_main = int(os.environ.get("RANK", "0")) == 0
    target = Path(config.output_dir).expanduser()
    run_name = config.run_name or target.name
    if not is_main:
        _train_steps(config, train_data, command, staging=None, run_name=run_name)
        _leave_process_group()
        return None
    with staged_output_dir(target, overwrite=config.overwrite) as staging:
        result = _train_steps(config, train_data, command, staging=staging, run_name=run_name)
        if before_commit is not None:
            before_commit(result)
    _leave_process_group()
    result = _moved(result, staging, target.absolute())
    if config.push_to_hub:

        try:
            result.hub_url = push_to_hub(
                result.output_dir, config.push_to_hub, private=config.hub_private or None, exist_ok=True,
                evaluation_results=result.files.get("eval_summary"),
            )
        except Exception as error:
            raise PushAfterTrainingError(
                f"The trained model is saved in {result.output_dir}, but pushing it to {config.push_to_hub} failed: "
                f"{' '.join(str(error).split())} Push it again with: st-oblique push {result.output_dir} "
                f"{config.push_to_hub}"
            ) from error
    return result


def _leave_process_group() -> None:
    """End this process's part of a distributed run (``accelerate launch``/``torchrun``) once its work is done: a
    process that exits with its process group alive can abort ("terminate called without an active exception")
    while the first process is still evaluating and saving, and the launcher then stops the whole run."""

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _train_steps(
    config: TrainConfig, train_data: TrainingData | None, command: str | None, *, staging: Path | None, run_name: str
) -> TrainResult | None:

    started = time.monotonic()
    chance = check_eval_sets(config)
    checkpoint = resolve_checkpoint(config)
    if train_data is None:
        train_data = load_training_data(
            dataset=config.dataset, dataset_config=config.dataset_config, split=config.split,
            captions=config.captions, images=config.images, pairs=config.pairs, shards=config.shards,
            streaming=config.streaming, columns=config.columns, max_samples=config.max_train_samples,
            show_progress_bar=config.progress,
        )
    logger.info("Training data: %s", train_data.description)
    set_seed(config.seed)
    model = build_model(config)
    check_modalities(train_data, model.modalities)
    loss = build_loss(model, config)  # first: a learned scale is a parameter of the model, counted and freezable
    frozen = freeze_parameters(
        model, lock_image_tower=config.lock_image_tower, lock_text_tower=config.lock_text_tower, patterns=config.freeze
    )
    _name_for_card(model, config, train_data, run_name)
    if checkpoint is not None:
        check_resume_checkpoint(checkpoint, config)
        check_checkpoint(checkpoint, model)  # before the untrained evaluation: fail fast

    untrained: list = []
    if staging is not None and config.eval_untrained:
        untrained = evaluate(model, f"{run_name} (untrained)", config, staging / "eval_untrained", command)

    checkpoints = config.checkpoints_path
    checkpoints_existed = checkpoints.exists()
    arguments = training_arguments(config, checkpoints, train_data)
    try:
        trainer = ObliqueTrainer(
            model=model, args=arguments, train_dataset=train_data.dataset, loss=loss,
            callbacks=[_config_saving_callback(config)],
        )
        if config.record_samples:
            trainer.data_collator = SampleRecorder(trainer.data_collator, config.record_samples)
        train_started = time.monotonic()
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except BaseException:
        # An interrupted or failed run leaves no empty checkpoint folder (ObliqueTrainer removes half-written ones).
        if not checkpoints_existed and checkpoints.is_dir() and not any(checkpoints.iterdir()):
            checkpoints.rmdir()
        raise
    train_seconds = time.monotonic() - train_started
    model.model_card_data.training_seconds = train_seconds  # the card's training time is the run's, not until save
    if staging is None:
        return None
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()  # the trainer may create its output folder without saving anything there

    trained = evaluate(model, run_name, config, staging / "eval", command)
    files: dict[str, Path] = {"model": staging}
    if trained:

        files["eval_summary"] = staging / "eval" / "summary.json"
        set_evaluation_results(
            model, {"results": [result.to_json() for result in trained], "settings": {"command": command}}
        )
    model.model_card_data.token_collapse = token_collapse_report(model, train_data.dataset)  # report and card
    model.save(str(staging))
    files["card"] = staging / "README.md"
    files["config"] = write_config_file(
        config.to_dict(), staging / CONFIG_FILE,
        header=f"Resolved configuration of this run; repeat it with: st-oblique train --config {CONFIG_FILE}",
    )
    report = _report(
        config, model, trainer, train_data, loss, frozen=frozen, untrained=untrained, trained=trained,
        chance=chance, command=command, seconds={"total": time.monotonic() - started, "training": train_seconds},
    )
    files["plot"] = _plot(report, staging / PLOT_FILE, run_name, chance, untrained=untrained, trained=trained)
    files["report"] = staging / REPORT_FILE
    if trained:
        files["eval"] = staging / "eval"
    if untrained:
        files["eval_untrained"] = staging / "eval_untrained"
    report["files"] = {key: path.name if path != staging else "." for key, path in files.items()}
    files["report"].write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return TrainResult(output_dir=staging, model=model, report=report, files=files)


class SampleRecorder:
    """``--record-samples FILE``: a data collator that appends the text columns of every row it collates to
    ``FILE.rank<N>`` (N: this process's ``RANK``), one row per line (columns tab-separated, line breaks escaped),
    then collates with ``collator``. It runs where the collator runs (in the data-loader workers, if any), so the file
    lists exactly the rows this process trained on, in the order it read them."""

    def __init__(self, collator: Callable[[list[dict]], dict], path: str | Path) -> None:
        self.collator = collator
        self.path = Path(f"{Path(path).expanduser()}.rank{int(os.environ.get('RANK', '0'))}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")

    def __call__(self, features: list[dict]) -> dict:
        lines = [
            "\t".join(value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
                      for value in row.values() if isinstance(value, str))
            for row in features
        ]
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.writelines(line + "\n" for line in lines)
        return self.collator(features)

    def __getattr__(self, name: str) -> Any:
        # The trainer reads the collator's settings (valid_label_columns, ...): those of the wrapped one.
        if name == "collator":  # not yet set (unpickling in a data-loader worker)
            raise AttributeError(name)
        return getattr(self.collator, name)


def _name_for_card(model: ObliqueSentenceTransformer, config: TrainConfig, data: TrainingData, run_name: str) -> None:
    """Name the model and its local training data on the card (Sentence Transformers names Hub datasets itself;
    without names, its card says "a sentence-transformers model trained. It maps ...")."""
    card = model.model_card_data
    card.model_name = (
        f"{run_name}: oblique {config.describe_backbone(short=True)} (K={config.num_tokens}, d={config.token_dim})"
    )
    if config.captions:  # the folder of a caption table names the collection (flickr8k_1k/captions.tsv)
        name = Path(config.captions).expanduser().resolve().parent.name
    elif config.pairs:
        name = Path(config.pairs).stem
    elif config.dataset:
        folder = Path(config.dataset).expanduser()
        if not folder.exists():
            return  # a Hub dataset
        name = folder.resolve().name
    else:  # data given in memory: its description without the details
        name = data.description.split(":")[0]
    card.train_datasets = [{"name": name}]


def _moved(result: TrainResult, staging: Path, target: Path) -> TrainResult:
    """``result`` with paths under ``staging`` pointing into ``target``."""

    def move(path: Path) -> Path:
        return target / path.relative_to(staging) if path.is_relative_to(staging) else path

    result.output_dir = target
    result.files = {key: move(path) for key, path in result.files.items()}
    return result


def _config_saving_callback(config: TrainConfig) -> Any:
    """A trainer callback writing ``train_config.yaml`` into every checkpoint, so that a resumed run can be checked."""

    class SaveConfigWithCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                write_config_file(config.to_dict(), folder / CONFIG_FILE)

    return SaveConfigWithCheckpoints()


def _report(config, model, trainer, train_data, loss, *, frozen, untrained, trained, chance, command, seconds) -> dict:

    curves = training_curves(trainer.state.log_history)
    losses = [value for value in curves.get("loss", []) if value is not None]
    scales = [value for value in curves.get("logit_scale", []) if value is not None]
    return {
        "st_oblique_version": __version__,
        "command": command,
        "config": config.to_dict(),
        "model": describe_model(model).to_dict(),
        "parameters": frozen,
        "data": {"description": train_data.description, "rows": train_data.num_rows, "columns": train_data.columns},
        "training": {
            "steps": trainer.state.global_step,
            "processes": trainer.args.world_size,
            "batch_size_per_process": config.batch_size,
            "epochs": trainer.state.epoch,
            "seconds": round(seconds["training"], 1),
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "loss": type(loss).__name__,
            "learnable_scale": config.learnable_scale,
            "initial_scale": config.scale,
            "final_scale": loss.scale,
            "scale_range": [min(scales), max(scales)] if scales else None,
            "curves": curves,
        },
        "token_collapse": model.model_card_data.token_collapse,
        "evaluation": {
            "trained": [result.to_json() for result in trained],
            "untrained": [result.to_json() for result in untrained],
            "chance": chance,
        },
        "seconds": round(seconds["total"], 1),
        "versions": package_versions(),
    }


def _plot(report: dict, path: Path, run_name: str, chance: dict[str, float], *, untrained: list, trained: list) -> Path:

    scores = score_table({label: results for label, results in (("untrained", untrained), ("trained", trained)) if results})
    training = report["training"]
    return plot_training(
        training["curves"], scores, path, title=f"{run_name}: {training['loss']}, {training['steps']} steps",
        chance={key: value for key, value in chance.items() if key in scores},
        fixed_scale=None if training["learnable_scale"] else training["final_scale"],
    )


def _check_local_path(option: str, name: str | None) -> None:
    """A name that can only be a local path (``./x``, ``/x``, ``~/x``, ``a/b/c``) must exist."""
    if not name or ":" in name or Path(name).expanduser().exists():
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise ObliqueLoadError(f"--{option.replace('_', '-')} {name}: no such folder (and it is not a Hub id).")
