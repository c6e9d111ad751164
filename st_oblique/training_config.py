"""The configuration of a training run: :class:`TrainConfig`, one dataclass whose fields are the options of
``st-oblique train`` (``num_tokens`` -> ``--num-tokens``, grouped as in ``--help``) and the keys of its ``--config``
files. A run's resolved configuration is saved next to its model as ``train_config.yaml``.

Example::

    from st_oblique.training_config import TrainConfig

    config = TrainConfig.from_file("runs/lit-oblique/train_config.yaml", output_dir="runs/lit-oblique-2")
    config.validate()
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from st_oblique.config import ConfigError, read_config_file

__all__ = ["MODEL_DEFINING_OPTIONS", "TrainConfig"]

Backbone = Literal["clip", "open_clip", "text", "dual"]
LossName = Literal["contrastive", "cached", "sigmoid"]
ScaleMode = Literal["fixed", "learnable"]

MODEL = "model"
LOSS = "loss"
DATA = "training data"
TRAINING = "training"
EVALUATION = "evaluation"
OUTPUT = "output"


def _doc(help: str, group: str, **metadata: Any) -> dict[str, Any]:
    """A field's metadata: its ``--help`` text, its section of the help, and option details (see
    :func:`st_oblique.config.add_dataclass_options`)."""
    return {"help": help, "group": group, **metadata}


@dataclass
class TrainConfig:
    """Everything ``st-oblique train`` needs; every field is an option (``num_tokens`` -> ``--num-tokens``)."""

    # -- model ------------------------------------------------------------------------------------------------------
    backbone: Backbone | None = field(default=None, metadata=_doc(
        "what to build on: a Hugging Face CLIP (clip), an open_clip model (open_clip), a text encoder (text),"
        " or a text and an image tower (dual)",
        MODEL,
    ))
    model: str | None = field(default=None, metadata=_doc(
        "the backbone: a HF CLIP id or folder (clip), an open_clip model name (open_clip), a text encoder id "
        "or folder (text)",
        MODEL,
    ))
    pretrained: str | None = field(default=None, metadata=_doc(
        "open_clip pretrained tag (e.g. laion2b_s34b_b79k) or checkpoint file",
        MODEL,
    ))
    open_clip_config: str | None = field(default=None, metadata=_doc(
        "JSON file with a custom open_clip architecture, registered under its file name (--model defaults to "
        "that name)",
        MODEL, metavar="FILE",
    ))
    open_clip_model_kwargs: dict | None = field(default=None, metadata=_doc(
        "open_clip model config overrides as JSON (embed_dim, vision_cfg, text_cfg)",
        MODEL,
    ))
    text_model: str | None = field(default=None, metadata=_doc(
        "dual: the text tower (HF text encoder or Sentence Transformers id/folder)",
        MODEL,
    ))
    image_model: str | None = field(default=None, metadata=_doc(
        "dual: the image tower (HF image model or timm checkpoint, id or folder)",
        MODEL,
    ))
    num_tokens: int = field(default=16, metadata=_doc("K, the number of unit tokens per embedding", MODEL))
    token_dim: int = field(default=32, metadata=_doc("d, the size of each token (embeddings have K*d floats)", MODEL))
    token_source: str | None = field(default=None, metadata=_doc(
        "text/dual: where the K text tokens come from: first (K class tokens), attention or split",
        MODEL, choices=("first", "attention", "split"),
    ))
    image_token_source: str | None = field(default=None, metadata=_doc(
        "dual: first (ViTs), attention or split; default: first for ViTs, else attention",
        MODEL, choices=("first", "attention", "split"),
    ))
    per_token_projection: bool = field(default=True, metadata=_doc(
        "a separate projection per token (else one shared projection)",
        MODEL,
    ))
    layer_norm: bool | None = field(default=None, metadata=_doc(
        "a LayerNorm in the heads before the projection (default: the builder's)",
        MODEL,
    ))
    max_seq_length: int | None = field(default=None, metadata=_doc(
        "text truncation length in tokens (class tokens come on top)",
        MODEL,
    ))
    lock_image_tower: bool = field(default=False, metadata=_doc(
        "freeze the pretrained image tower and keep it in eval mode (LiT); new class tokens and heads train",
        MODEL,
    ))
    lock_text_tower: bool = field(default=False, metadata=_doc(
        "freeze the pretrained text tower and keep it in eval mode",
        MODEL,
    ))
    freeze: list[str] = field(default_factory=list, metadata=_doc(
        "freeze parameters whose name matches this regular expression (repeatable)",
        MODEL, metavar="REGEX",
    ))
    trust_remote_code: bool = field(default=False, metadata=_doc(
        "allow backbones with custom code from the Hub",
        MODEL,
    ))

    # -- loss -------------------------------------------------------------------------------------------------------
    loss: LossName = field(default="contrastive", metadata=_doc(
        "contrastive (symmetric InfoNCE), cached (the same with GradCache, for large batches) or sigmoid "
        "(SigLIP)",
        LOSS,
    ))
    scale: float = field(default=1.0, metadata=_doc(
        "the logit scale (inverse temperature), or its initial value when learnable",
        LOSS,
    ))
    scale_mode: ScaleMode | None = field(default=None, metadata=_doc(
        "fixed or learnable scale (default: fixed for contrastive/cached, learnable for sigmoid)",
        LOSS,
    ))
    max_scale: float | None = field(default=100.0, metadata=_doc(
        "cap of a learnable scale ('none': no cap; the paper uses 3.95)",
        LOSS,
    ))
    scale_learning_rate: float | None = field(default=None, metadata=_doc(
        "learning rate of a learnable scale (default: --learning-rate)",
        LOSS,
    ))
    mini_batch_size: int = field(default=32, metadata=_doc(
        "cached loss: rows per forward pass (bounds the memory)",
        LOSS,
    ))
    gather_across_devices: bool = field(default=False, metadata=_doc(
        "with several processes: every row sees the whole global batch as negatives",
        LOSS,
    ))

    # -- data -------------------------------------------------------------------------------------------------------
    dataset: str | None = field(default=None, metadata=_doc(
        "Hugging Face dataset id (online) or local dataset folder",
        DATA,
    ))
    dataset_config: str | None = field(default=None, metadata=_doc("the dataset's configuration name", DATA))
    split: str = field(default="train", metadata=_doc("the dataset split", DATA))
    captions: str | None = field(default=None, metadata=_doc(
        "caption table (.tsv/.csv with image and caption columns)",
        DATA, metavar="FILE",
    ))
    images: str | None = field(default=None, metadata=_doc(
        "folder or tar archive of the images named in --captions",
        DATA, metavar="PATH",
    ))
    pairs: str | None = field(default=None, metadata=_doc(
        "table of text pairs (.tsv/.csv with a header row)",
        DATA, metavar="FILE",
    ))
    columns: list[str] = field(default_factory=list, metadata=_doc(
        "the loss's input columns in order: anchor positive [negatives...] (with --captions: the table's "
        "image and caption columns)",
        DATA, nargs="+", metavar="COLUMN",
    ))
    max_train_samples: int | None = field(default=None, metadata=_doc("train on the first N rows only", DATA))

    # -- training ---------------------------------------------------------------------------------------------------
    batch_size: int = field(default=32, metadata=_doc("rows per batch and process (in-batch negatives)", TRAINING))
    epochs: float = field(default=1.0, metadata=_doc("passes over the data (ignored with --max-steps)", TRAINING))
    max_steps: int | None = field(default=None, metadata=_doc("stop after this many optimizer steps", TRAINING))
    learning_rate: float = field(default=5e-5, metadata=_doc("peak learning rate", TRAINING))
    warmup: float = field(default=0.1, metadata=_doc(
        "linear warmup: a fraction of the steps (< 1) or a number of steps (>= 1)",
        TRAINING,
    ))
    weight_decay: float = field(default=0.0, metadata=_doc(
        "AdamW weight decay (never applied to the logit scale)",
        TRAINING,
    ))
    seed: int = field(default=42, metadata=_doc("random seed (heads, data order)", TRAINING))
    logging_steps: int = field(default=10, metadata=_doc("log the loss and the scale every N steps", TRAINING))
    save_steps: int | None = field(default=None, metadata=_doc(
        "save a checkpoint every N steps (into --checkpoint-dir)",
        TRAINING,
    ))
    save_total_limit: int | None = field(default=2, metadata=_doc("keep at most this many checkpoints", TRAINING))
    checkpoint_dir: str | None = field(default=None, metadata=_doc(
        "where checkpoints go (default: <output-dir>-checkpoints)",
        TRAINING,
    ))
    resume_from_checkpoint: str | None = field(default=None, metadata=_doc(
        "resume from a checkpoint folder, or 'last' for the newest one in --checkpoint-dir",
        TRAINING,
    ))
    device: str | None = field(default=None, metadata=_doc(
        "cpu, cuda, cuda:1, mps... (default: the best available)",
        TRAINING,
    ))
    dataloader_num_workers: int = field(default=0, metadata=_doc("data loading processes", TRAINING))
    training_arguments: dict | None = field(default=None, metadata=_doc(
        'extra SentenceTransformerTrainingArguments as JSON, e.g. \'{"bf16": true}\'',
        TRAINING,
    ))

    # -- evaluation -------------------------------------------------------------------------------------------------
    eval_datasets: list[str] = field(default_factory=list, metadata=_doc(
        "zero-shot evaluation set after training: imagenette, fashion_mnist, flickr8k_1k, sklearn_digits, ..."
        " (repeatable; see `st-oblique eval --help`)",
        EVALUATION, flag="--eval-dataset", metavar="NAME",
    ))
    eval_dataset_paths: list[str] = field(default_factory=list, metadata=_doc(
        "where an evaluation set is: NAME=PATH (repeatable)",
        EVALUATION, flag="--eval-dataset-path", metavar="NAME=PATH",
    ))
    data_root: str | None = field(default=None, metadata=_doc(
        "folder holding the evaluation sets (default: $ST_OBLIQUE_DATA)",
        EVALUATION,
    ))
    mteb_tasks: list[str] = field(default_factory=list, metadata=_doc(
        "MTEB task after training ('local' for the offline ones; repeatable)",
        EVALUATION, flag="--mteb-task", metavar="NAME",
    ))
    eval_templates: list[str] = field(default_factory=list, metadata=_doc(
        "zero-shot prompt template with {c} (repeatable; default: each dataset's own)",
        EVALUATION, flag="--eval-template", metavar="TEMPLATE",
    ))
    eval_max_samples: int | None = field(default=None, metadata=_doc(
        "evaluate on random subsets of this size",
        EVALUATION,
    ))
    eval_batch_size: int = field(default=64, metadata=_doc("encoding batch size for evaluation", EVALUATION))
    eval_untrained: bool = field(default=False, metadata=_doc(
        "also evaluate the model before training, side by side",
        EVALUATION,
    ))

    # -- output -----------------------------------------------------------------------------------------------------
    output_dir: str | None = field(default=None, metadata=_doc(
        "where the trained model, its card, report and plot go (required)",
        OUTPUT,
    ))
    overwrite: bool = field(default=False, metadata=_doc(
        "replace an existing output folder (once the new one is complete)",
        OUTPUT,
    ))
    run_name: str | None = field(default=None, metadata=_doc(
        "the model's name in results (default: the output folder's name)",
        OUTPUT,
    ))
    push_to_hub: str | None = field(default=None, metadata=_doc(
        "push the trained model to this Hub repository (user/name)",
        OUTPUT, metavar="REPO",
    ))
    hub_private: bool = field(default=False, metadata=_doc("create the Hub repository as private", OUTPUT))
    progress: bool = field(default=True, metadata=_doc("show progress bars", OUTPUT))

    @classmethod
    def field_names(cls) -> list[str]:
        return [item.name for item in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a mapping of field names (dashes allowed); unknown keys are an error."""
        values = {key.replace("-", "_"): value for key, value in values.items()}
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"Unknown training option(s) {unknown}; see `st-oblique train --help`.")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """A config from a YAML/JSON file (e.g. a run's ``train_config.yaml``), with ``overrides`` on top."""
        return cls.from_dict({**read_config_file(path), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved(self) -> TrainConfig:
        """A copy with the defaults that depend on other options filled in (what ``train_config.yaml`` records):
        ``model`` from ``open_clip_config``'s file name, ``scale_mode`` from the loss."""
        resolved = dataclasses.replace(self, freeze=list(self.freeze))
        if resolved.backbone == "open_clip" and not resolved.model and resolved.open_clip_config:
            resolved.model = Path(resolved.open_clip_config).stem
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
        if self.backbone == "dual":
            return f"dual encoder: {self.text_model} + {self.image_model}"
        return f"{self.backbone} {self.model}{f' ({self.pretrained})' if self.pretrained else ''}"

    def validate(self, *, has_data: bool = False) -> None:
        """Raise :class:`~st_oblique.config.ConfigError` (one sentence, with the fix) for an unusable config.

        Args:
            has_data: training data is passed to :func:`train` directly (no data option needed).
        """
        if self.backbone is None:
            raise ConfigError("Choose a backbone: --backbone clip, open_clip, text or dual.")
        if self.backbone not in ("clip", "open_clip", "text", "dual"):
            raise ConfigError(f"Unknown backbone {self.backbone!r}; choose clip, open_clip, text or dual.")
        if self.backbone == "dual":
            if not (self.text_model and self.image_model):
                raise ConfigError("--backbone dual needs --text-model and --image-model.")
            if self.model:
                raise ConfigError("--backbone dual takes --text-model and --image-model, not --model.")
        elif not (self.model or (self.backbone == "open_clip" and self.open_clip_config)):
            raise ConfigError(f"--backbone {self.backbone} needs --model (the backbone's id, folder or name).")
        if self.backbone != "open_clip" and (self.pretrained or self.open_clip_config or self.open_clip_model_kwargs):
            raise ConfigError("--pretrained, --open-clip-config and --open-clip-model-kwargs are for --backbone open_clip.")
        if self.backbone not in ("text", "dual") and self.token_source is not None:
            raise ConfigError("--token-source applies to text and dual backbones (CLIP towers use their class tokens).")
        for name in ("num_tokens", "token_dim", "batch_size", "logging_steps", "eval_batch_size", "mini_batch_size"):
            _check_positive(name, getattr(self, name), integer=True)
        for name in ("max_steps", "save_steps", "max_train_samples", "eval_max_samples", "max_seq_length"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name), integer=True)
        _check_positive("scale", self.scale)
        _check_positive("learning_rate", self.learning_rate)
        if self.max_scale is not None:
            _check_positive("max_scale", self.max_scale)
        if self.scale_learning_rate is not None:
            _check_positive("scale_learning_rate", self.scale_learning_rate)
        if self.loss not in ("contrastive", "cached", "sigmoid"):
            raise ConfigError(f"Unknown loss {self.loss!r}; choose contrastive, cached or sigmoid.")
        if self.scale_mode not in (None, "fixed", "learnable"):
            raise ConfigError(f"Unknown scale mode {self.scale_mode!r}; choose fixed or learnable.")
        if self.batch_size < 2:
            raise ConfigError("--batch-size must be at least 2: the other rows of a batch are the negatives.")
        if self.max_steps is None and not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise ConfigError(f"--epochs must be positive (or give --max-steps), got {self.epochs!r}.")
        if not (isinstance(self.warmup, (int, float)) and self.warmup >= 0):
            raise ConfigError(f"--warmup must be a fraction (< 1) or a number of steps (>= 1), got {self.warmup!r}.")
        if not has_data and not (self.dataset or self.captions or self.pairs):
            raise ConfigError("Give training data: --dataset ID_OR_FOLDER, --captions FILE --images PATH, or --pairs FILE.")
        for entry in self.eval_dataset_paths:
            if "=" not in entry:
                raise ConfigError(f"--eval-dataset-path takes NAME=PATH, got {entry!r}.")
        if not self.output_dir:
            raise ConfigError("Give --output-dir: where the trained model, its card and report go.")

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


MODEL_DEFINING_OPTIONS = (
    "backbone", "model", "pretrained", "open_clip_config", "open_clip_model_kwargs", "text_model", "image_model",
    "num_tokens", "token_dim", "token_source", "image_token_source", "per_token_projection", "layer_norm",
    "lock_image_tower", "lock_text_tower", "freeze", "loss", "scale_mode",
)
"""Options a resumed run must share with the run that wrote the checkpoint (model shape, trainable parameters,
the loss's learnable parameters: everything the checkpoint's model and optimizer state depend on)."""


def _check_positive(name: str, value: Any, integer: bool = False) -> None:
    valid = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(value, bool) or not valid or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"--{name.replace('_', '-')} must be {kind}, got {value!r}.")
