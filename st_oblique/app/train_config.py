"""The configuration of a training run: :class:`TrainConfig`, one dataclass whose fields are the options of
``st-oblique train`` (``num_tokens`` -> ``--num-tokens``, grouped as in ``--help``) and the keys of its ``--config``
files. A run's resolved configuration is saved next to its model as ``train_config.yaml``.

Example::

    from st_oblique.app.train_config import TrainConfig

    config = TrainConfig.from_file("runs/lit-oblique/train_config.yaml", output_dir="runs/lit-oblique-2")
    config.validate()
"""

# ruff: noqa: RUF009  (the fields' defaults are `_option(...)`, which returns a `dataclasses.field`)
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from st_oblique.app.options import option_flag, read_config_file
from st_oblique.builders.families import BACKBONE_FAMILIES, family_option_names
from st_oblique.devices import check_device
from st_oblique.errors import ObliqueConfigError
from st_oblique.validators import check_positive_int, check_positive_number, parse_token_counts

__all__ = ["MODEL_DEFINING_OPTIONS", "TrainConfig"]

LossName = Literal["contrastive", "cached", "sigmoid"]
ScaleMode = Literal["fixed", "learnable"]
TokenSource = Literal["first", "attention", "split", "class_attention"]

MODEL = "model"
LOSS = "loss"
DATA = "training data"
TRAINING = "training"
EVALUATION = "evaluation"
OUTPUT = "output"


def _option(default: Any, group: str, help: str, **metadata: Any) -> Any:
    """A field of :class:`TrainConfig`: its default (a list default is copied for every config), its section of
    ``--help``, its help text and option details (see :func:`st_oblique.app.options.add_dataclass_options`)."""
    metadata = {"help": help, "group": group, **metadata}
    if isinstance(default, list):
        return field(default_factory=default.copy, metadata=metadata)
    return field(default=default, metadata=metadata)


def _or_list(items: Iterable[str]) -> str:
    """``"a, b, c or d"``."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


@dataclass
class TrainConfig:
    """Everything ``st-oblique train`` needs; every field is an option (``num_tokens`` -> ``--num-tokens``)."""

    # -- model ------------------------------------------------------------------------------------------------------
    backbone: str | None = _option(
        None, MODEL,
        "what to build on: " + _or_list([f"{family.summary} ({name})" for name, family in BACKBONE_FAMILIES.items()]),
        choices=tuple(BACKBONE_FAMILIES),
    )
    model: str | None = _option(
        None, MODEL,
        "the backbone: a HF CLIP id or folder (clip), an open_clip model name (open_clip), a text encoder id "
        "or folder (text)",
    )
    pretrained: str | None = _option(
        None, MODEL, "open_clip pretrained tag (e.g. laion2b_s34b_b79k) or checkpoint file",
    )
    open_clip_config: str | None = _option(
        None, MODEL,
        "JSON file with a custom open_clip architecture, registered under its file name (--model defaults to "
        "that name)",
        metavar="FILE",
    )
    open_clip_model_kwargs: dict | None = _option(
        None, MODEL, "open_clip model config overrides as JSON (embed_dim, vision_cfg, text_cfg)",
    )
    text_model: str | None = _option(
        None, MODEL, "dual: the text tower (HF text encoder or Sentence Transformers id/folder)",
    )
    image_model: str | None = _option(
        None, MODEL, "dual: the image tower (HF image model or timm checkpoint, id or folder)",
    )
    num_tokens: int = _option(16, MODEL, "K, the number of unit tokens per embedding")
    token_dim: int = _option(32, MODEL, "d, the size of each token (embeddings have K*d floats)")
    token_source: TokenSource | None = _option(
        None, MODEL,
        "where the K tokens come from: first (K class tokens in the text tower; text/dual), attention, split "
        "(text/dual) or class_attention (K class tokens that join after the unchanged towers: about the plain "
        "model's encoding speed; every backbone)",
    )
    image_token_source: TokenSource | None = _option(
        None, MODEL,
        "dual: first (ViTs), attention, split or class_attention; default: first for ViTs, else attention "
        "(class_attention when --token-source is class_attention)",
    )
    class_attention_layers: int | None = _option(
        None, MODEL, "class_attention: class-attention blocks per tower (default 2)",
    )
    class_attention_width: int | None = _option(
        None, MODEL,
        "class_attention: the blocks' width (default 128, capped at the tower's; the tower's own width starts the "
        "blocks from its last layers)",
    )
    per_token_projection: bool = _option(True, MODEL, "a separate projection per token (else one shared projection)")
    layer_norm: bool | None = _option(
        None, MODEL, "a LayerNorm in the heads before the projection (default: the builder's)",
    )
    max_seq_length: int | None = _option(None, MODEL, "text truncation length in tokens (class tokens come on top)")
    lock_image_tower: bool = _option(
        False, MODEL,
        "freeze the pretrained image tower and keep it in eval mode (LiT); new class tokens and heads train",
    )
    lock_text_tower: bool = _option(False, MODEL, "freeze the pretrained text tower and keep it in eval mode")
    freeze: list[str] = _option(
        [], MODEL, "freeze parameters whose name matches this regular expression (repeatable)",
        metavar="REGEX",
    )
    trust_remote_code: bool = _option(False, MODEL, "allow backbones with custom code from the Hub")

    # -- loss -------------------------------------------------------------------------------------------------------
    loss: LossName = _option(
        "contrastive", LOSS,
        "contrastive (symmetric InfoNCE), cached (the same with GradCache, for large batches) or sigmoid "
        "(SigLIP)",
    )
    scale: float = _option(1.0, LOSS, "the logit scale (inverse temperature), or its initial value when learnable")
    scale_mode: ScaleMode | None = _option(
        None, LOSS, "fixed or learnable scale (default: fixed for contrastive/cached, learnable for sigmoid)",
    )
    max_scale: float | None = _option(100.0, LOSS, "cap of a learnable scale ('none': no cap; the paper uses 3.95)")
    scale_learning_rate: float | None = _option(
        None, LOSS, "learning rate of a learnable scale (default: --learning-rate)",
    )
    mini_batch_size: int = _option(32, LOSS, "cached loss: rows per forward pass (bounds the memory)")
    gather_across_devices: bool = _option(
        False, LOSS, "with several processes: every row sees the whole global batch as negatives",
    )
    nested_tokens: str | None = _option(
        None, LOSS, "train every token prefix with ObliqueMatryoshkaLoss: comma-separated token counts, e.g. "
        "1,2,4,8,16, or 'default' (1, 2, 4, ... and K)", metavar="COUNTS",
    )

    # -- data -------------------------------------------------------------------------------------------------------
    dataset: str | None = _option(None, DATA, "Hugging Face dataset id (online) or local dataset folder")
    dataset_config: str | None = _option(None, DATA, "the dataset's configuration name")
    split: str = _option("train", DATA, "the dataset split")
    captions: str | None = _option(
        None, DATA, "caption table (.tsv/.csv with image and caption columns)",
        metavar="FILE",
    )
    images: str | None = _option(None, DATA, "folder or tar archive of the images named in --captions", metavar="PATH")
    pairs: str | None = _option(None, DATA, "table of text pairs (.tsv/.csv with a header row)", metavar="FILE")
    shards: str | None = _option(
        None, DATA, "WebDataset tar shards ({key}.jpg + {key}.txt, as img2dataset writes them): a brace pattern like "
        "'data/{00000..00009}.tar' (several joined by ::), streamed; each process of a run reads its own shards",
        metavar="PATTERN",
    )
    streaming: bool = _option(False, DATA, "stream --dataset instead of loading it into memory (needs --max-steps)")
    columns: list[str] = _option(
        [], DATA, "the loss's input columns in order: anchor positive [negatives...] (with --captions: the table's "
        "image and caption columns)",
        nargs="+", metavar="COLUMN",
    )
    max_train_samples: int | None = _option(None, DATA, "train on the first N rows only")

    # -- training ---------------------------------------------------------------------------------------------------
    batch_size: int = _option(32, TRAINING, "rows per batch and process (in-batch negatives)")
    epochs: float = _option(1.0, TRAINING, "passes over the data (ignored with --max-steps)")
    max_steps: int | None = _option(None, TRAINING, "stop after this many optimizer steps")
    learning_rate: float = _option(5e-5, TRAINING, "peak learning rate")
    warmup: float = _option(0.1, TRAINING, "linear warmup: a fraction of the steps (< 1) or a number of steps (>= 1)")
    weight_decay: float = _option(0.0, TRAINING, "AdamW weight decay (never applied to the logit scale)")
    seed: int = _option(42, TRAINING, "random seed (heads, data order)")
    logging_steps: int = _option(10, TRAINING, "log the loss and the scale every N steps")
    save_steps: int | None = _option(None, TRAINING, "save a checkpoint every N steps (into --checkpoint-dir)")
    save_total_limit: int | None = _option(2, TRAINING, "keep at most this many checkpoints")
    checkpoint_dir: str | None = _option(None, TRAINING, "where checkpoints go (default: <output-dir>-checkpoints)")
    resume_from_checkpoint: str | None = _option(
        None, TRAINING, "resume from a checkpoint folder, or 'last' for the newest one in --checkpoint-dir",
    )
    device: str | None = _option(None, TRAINING, "cpu, cuda, cuda:1, mps... (default: the best available)")
    dataloader_num_workers: int = _option(0, TRAINING, "data loading processes")
    training_arguments: dict | None = _option(
        None, TRAINING, 'extra SentenceTransformerTrainingArguments as JSON, e.g. \'{"bf16": true}\'',
    )

    # -- evaluation -------------------------------------------------------------------------------------------------
    eval_datasets: list[str] = _option(
        [], EVALUATION,
        "zero-shot evaluation set after training: imagenette, fashion_mnist, flickr8k_1k, sklearn_digits, ..."
        " (repeatable; see `st-oblique eval --help`)",
        flag="--eval-dataset", metavar="NAME",
    )
    eval_dataset_paths: list[str] = _option(
        [], EVALUATION, "where an evaluation set is: NAME=PATH (repeatable)",
        flag="--eval-dataset-path", metavar="NAME=PATH",
    )
    data_root: str | None = _option(None, EVALUATION, "folder holding the evaluation sets (default: $ST_OBLIQUE_DATA)")
    mteb_tasks: list[str] = _option(
        [], EVALUATION, "MTEB task after training ('local' for the offline ones; repeatable)",
        flag="--mteb-task", metavar="NAME",
    )
    eval_templates: list[str] = _option(
        [], EVALUATION, "zero-shot prompt template with {c} (repeatable; default: each dataset's own)",
        flag="--eval-template", metavar="TEMPLATE",
    )
    eval_max_samples: int | None = _option(None, EVALUATION, "evaluate on random subsets of this size")
    eval_batch_size: int = _option(64, EVALUATION, "encoding batch size for evaluation")
    eval_untrained: bool = _option(False, EVALUATION, "also evaluate the model before training, side by side")

    # -- output -----------------------------------------------------------------------------------------------------
    output_dir: str | None = _option(None, OUTPUT, "where the trained model, its card, report and plot go (required)")
    overwrite: bool = _option(False, OUTPUT, "replace an existing output folder (once the new one is complete)")
    run_name: str | None = _option(None, OUTPUT, "the model's name in results (default: the output folder's name)")
    push_to_hub: str | None = _option(
        None, OUTPUT, "push the trained model to this Hub repository (user/name)",
        metavar="REPO",
    )
    hub_private: bool = _option(False, OUTPUT, "create the Hub repository as private")
    progress: bool = _option(True, OUTPUT, "show progress bars")
    record_samples: str | None = _option(
        None, OUTPUT, "write the text of every training row each process reads, one row per line, to FILE.rank<N> "
        "(audits what a multi-process run trained on: every row once per epoch)",
        metavar="FILE",
    )

    def __post_init__(self) -> None:
        # A list option given one value (`freeze: heads` in a config file, freeze="heads" in Python) is a one-item
        # list; list("heads") would silently be five one-letter options.
        for name in self.list_field_names():
            setattr(self, name, _as_list(name, getattr(self, name)))

    @classmethod
    def field_names(cls) -> list[str]:
        return [item.name for item in dataclasses.fields(cls)]

    @classmethod
    def list_field_names(cls) -> list[str]:
        """The options that hold a list (repeatable, or several values after one flag)."""
        hints = typing.get_type_hints(cls)
        return [name for name in cls.field_names() if typing.get_origin(hints[name]) is list]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a mapping of field names or option names (dashes allowed: ``eval-dataset`` is
        ``eval_datasets``); unknown keys are an error."""
        flags = {item.metadata["flag"].lstrip("-").replace("-", "_"): item.name
                 for item in dataclasses.fields(cls) if "flag" in item.metadata}
        values = {flags.get(key.replace("-", "_"), key.replace("-", "_")): value for key, value in values.items()}
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ObliqueConfigError(f"Unknown training option(s) {unknown}; see `st-oblique train --help`.")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """A config from a YAML/JSON file (e.g. a run's ``train_config.yaml``), with ``overrides`` on top."""
        return cls.from_dict({**read_config_file(path), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved(self) -> TrainConfig:
        """A copy with the defaults that depend on other options filled in (what ``train_config.yaml`` records):
        ``model`` from ``open_clip_config``'s file name, ``scale_mode`` from the loss, a dual encoder's
        ``image_token_source`` from ``--token-source class_attention`` (late class tokens in both towers)."""
        resolved = dataclasses.replace(self, freeze=list(self.freeze))
        if not resolved.model and resolved.open_clip_config:  # (--open-clip-config is for open_clip only)
            resolved.model = Path(resolved.open_clip_config).stem
        if resolved.backbone == "dual" and resolved.token_source == "class_attention" and not resolved.image_token_source:
            resolved.image_token_source = "class_attention"  # late class tokens in both towers
        if resolved.scale_mode is None and resolved.loss in ("contrastive", "cached", "sigmoid"):
            resolved.scale_mode = "learnable" if resolved.learnable_scale else "fixed"
        return resolved

    @property
    def learnable_scale(self) -> bool:
        """The resolved scale mode: learnable for ``scale_mode="learnable"``, or by default for the sigmoid loss."""
        return self.scale_mode == "learnable" if self.scale_mode else self.loss == "sigmoid"

    @property
    def model_description(self) -> str:
        """The backbone in a few words, e.g. ``"open_clip ViT-B-32 (laion2b_s34b_b79k)"``."""
        return self.describe_backbone()

    def describe_backbone(self, *, short: bool = False) -> str:
        """``"<family> <backbone> [+ <backbone>] [(<optional argument>)]"``, e.g. ``"dual minilm + efficientnet"``,
        ``"open_clip ViT-B-32 (laion2b_s34b_b79k)"``; ``short``: folders by their last part, no optional argument."""
        family = BACKBONE_FAMILIES[str(self.backbone)]
        resolved = self.resolved()  # an --open-clip-config architecture is named after its file
        values = {option: getattr(resolved, option) for option in family.arguments}
        names = [Path(str(values[option])).name if short else str(values[option]) for option in family.required]
        extras = [] if short else [f" ({values[option]})" for option in family.arguments
                                   if option not in family.required and values[option]]
        return f"{family.name} {' + '.join(names)}{''.join(extras)}"

    def validate(self, *, has_data: bool = False) -> None:
        """Raise :class:`~st_oblique.app.options.ObliqueConfigError` (one sentence, with the fix) for an unusable config.

        Args:
            has_data: training data is passed to :func:`~st_oblique.app.train_pipeline.train` directly (no data option needed).
        """
        self._validate_backbone()
        if self.backbone in ("clip", "open_clip") and self.token_source not in (None, "class_attention"):
            raise ObliqueConfigError(
                f"--token-source {self.token_source} applies to text and dual backbones; CLIP backbones take "
                "class_attention (or nothing: K class tokens inside both towers)."
            )
        for name in ("num_tokens", "token_dim", "batch_size", "logging_steps", "eval_batch_size", "mini_batch_size"):
            check_positive_int(getattr(self, name), name=option_flag(name), error=ObliqueConfigError)
        for name in ("max_steps", "save_steps", "max_train_samples", "eval_max_samples", "max_seq_length",
                     "class_attention_layers", "class_attention_width"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name=option_flag(name), error=ObliqueConfigError)
        for name in ("scale", "learning_rate", "max_scale", "scale_learning_rate"):
            if getattr(self, name) is not None:
                check_positive_number(getattr(self, name), name=option_flag(name), error=ObliqueConfigError)
        if self.loss not in ("contrastive", "cached", "sigmoid"):
            raise ObliqueConfigError(f"Unknown loss {self.loss!r}; choose contrastive, cached or sigmoid.")
        if self.nested_tokens is not None:
            parse_token_counts(
                self.nested_tokens, self.num_tokens, name="--nested-tokens", num_tokens_name="--num-tokens",
                error=ObliqueConfigError,
            )
        if self.scale_mode not in (None, "fixed", "learnable"):
            raise ObliqueConfigError(f"Unknown scale mode {self.scale_mode!r}; choose fixed or learnable.")
        if self.batch_size < 2:
            raise ObliqueConfigError("--batch-size must be at least 2: the other rows of a batch are the negatives.")
        if self.max_steps is None and not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise ObliqueConfigError(f"--epochs must be positive (or give --max-steps), got {self.epochs!r}.")
        if not (isinstance(self.warmup, (int, float)) and self.warmup >= 0):
            raise ObliqueConfigError(f"--warmup must be a fraction (< 1) or a number of steps (>= 1), got {self.warmup!r}.")
        if not has_data and not (self.dataset or self.captions or self.pairs or self.shards):
            raise ObliqueConfigError(
                "Give training data: --dataset ID_OR_FOLDER, --shards PATTERN, --captions FILE --images PATH, or --pairs FILE."
            )
        if (self.shards or self.streaming) and self.max_steps is None:
            raise ObliqueConfigError(
                "Streamed data (--shards, --streaming) has no length, so the run cannot count epochs: give --max-steps "
                "(e.g. rows per epoch / (--batch-size x processes) x epochs)."
            )
        for entry in self.eval_dataset_paths:
            if "=" not in entry:
                raise ObliqueConfigError(f"--eval-dataset-path takes NAME=PATH, got {entry!r}.")
        if not self.output_dir:
            raise ObliqueConfigError("Give --output-dir: where the trained model, its card and report go.")
        if not (isinstance(self.dataloader_num_workers, int) and self.dataloader_num_workers >= 0):
            raise ObliqueConfigError(
                f"--dataloader-num-workers must be 0 (load in the training process) or more, got {self.dataloader_num_workers!r}."
            )
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**32):
            raise ObliqueConfigError(f"--seed must be a whole number from 0 to 2**32 - 1, got {self.seed!r}.")
        if self.device is not None:
            check_device(self.device, name="--device")  # else the backbone's build fails and seems to be at fault

    def _validate_backbone(self) -> None:
        """The backbone family exists, its backbone options are given and no other family's option is."""
        if self.backbone is None:
            raise ObliqueConfigError(f"Choose a backbone: --backbone {_or_list(BACKBONE_FAMILIES)}.")
        family = BACKBONE_FAMILIES.get(self.backbone)
        if family is None:
            raise ObliqueConfigError(f"Unknown backbone {self.backbone!r}; choose {_or_list(BACKBONE_FAMILIES)}.")
        resolved = self.resolved()  # --open-clip-config names the open_clip model
        missing = [option_flag(option) for option in family.required if not getattr(resolved, option)]
        if missing:
            raise ObliqueConfigError(f"--backbone {family.name} needs {' and '.join(missing)}. {family.hint}")
        for option, families in family_option_names().items():
            if family.name not in families and getattr(self, option) not in (None, False):
                raise ObliqueConfigError(
                    f"{option_flag(option)} is for --backbone {_or_list(families)}, not {family.name}. {family.hint}"
                )

    @property
    def checkpoints_path(self) -> Path:
        """Where checkpoints go: ``checkpoint_dir``, else ``<output_dir>-checkpoints``."""
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        output = Path(str(self.output_dir)).expanduser()
        return output.with_name(output.name + "-checkpoints")

    @property
    def eval_paths(self) -> dict[str, str]:
        return dict(entry.split("=", 1) for entry in self.eval_dataset_paths)


_FLAGS = {item.name: item.metadata["flag"] for item in dataclasses.fields(TrainConfig) if "flag" in item.metadata}
"""Fields whose option name is not the field name (``eval_datasets`` -> ``--eval-dataset``)."""

MODEL_DEFINING_OPTIONS = (
    "backbone", "model", "pretrained", "open_clip_config", "open_clip_model_kwargs", "text_model", "image_model",
    "num_tokens", "token_dim", "token_source", "image_token_source", "per_token_projection", "layer_norm",
    "class_attention_layers", "class_attention_width",
    "lock_image_tower", "lock_text_tower", "freeze", "loss", "scale_mode",
)
"""Options a resumed run must share with the run that wrote the checkpoint (model shape, trainable parameters,
the loss's learnable parameters: everything the checkpoint's model and optimizer state depend on)."""


def _as_list(name: str, value: Any) -> list[str]:
    """A list option's value as a list of strings: one string (or number) is a one-item list, None an empty one."""
    if value is None:
        return []
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, (list, tuple)) and all(isinstance(item, (str, int, float)) and not isinstance(item, bool)
                                                for item in value):
        return [str(item) for item in value]
    flag = option_flag(name) if name not in _FLAGS else _FLAGS[name]
    raise ObliqueConfigError(
        f"{flag} ({name} in a config file) takes a list of strings, got {value!r}; write `{name}: [a, b]` or "
        f"`{name}: a`."
    )
