"""Model cards for oblique models: ST's generated card plus an "Oblique embedding" section.

:class:`ObliqueModelCardData` plugs into Sentence Transformers' model-card machinery (``model.save`` and
``model.push_to_hub`` render it), so everything ST fills in (training datasets, losses, hyperparameters,
evaluator results, training logs, versions) stays. It adds:

- the oblique section: K, d, where the class tokens sit in each tower, the similarity (sum of K per-token
  cosines, in [-K, K], ``dot``), the training loss and the final logit scale (learned temperature);
- evaluation results from the st-oblique evaluation harness (a results dict or JSON file), as a table;
- the paper's citation, ``st-oblique`` / ``oblique-manifold`` / modality tags;
- a usage snippet that works: ``pip install st-oblique`` and ``st_oblique.load(...)`` (plain
  ``SentenceTransformer`` needs ``trust_remote_code=True``), encoding images and texts for image-text models.

The template is ``model_cards/oblique_model_card_template.md`` (shipped inside the package as
``st_oblique/model_cards``), ST's template with the oblique parts added.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from huggingface_hub import constants as hub_constants
from sentence_transformers.base.model_card import format_duration
from sentence_transformers.base.modules import Router
from sentence_transformers.sentence_transformer.model_card import SentenceTransformerModelCardData

from st_oblique._compat import loaded_model_card, model_id_placeholder, set_loaded_model_card, write_model_card_file
from st_oblique.citations import PAPER_CITATION
from st_oblique.data.training_data_checks import already_checked, check_training_dataset
from st_oblique.losses.matryoshka import check_no_sentence_transformers_matryoshka
from st_oblique.model.description import ObliqueModelDescription, describe_model
from st_oblique.model.hub_ids import is_hub_model_id
from st_oblique.result_records import MAIN_METRICS

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EvaluationResults = dict[str, Any] | list[dict[str, Any]] | str | os.PathLike
"""What ``evaluation_results`` accepts (see :func:`format_evaluation_results`)."""

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).parents[1] / "model_cards" / "oblique_model_card_template.md"
"""The card template (``model_cards/`` of the source tree, shipped as package data)."""

CARD_TAGS = ("st-oblique", "oblique-manifold")
"""Tags every oblique model card carries (modality tags such as ``modality:image`` are added per model)."""

PAPER_CITATION_NAME = "Oblique manifold embeddings"

EVALUATION_START = "<!-- st-oblique evaluation -->"
EVALUATION_END = "<!-- end of st-oblique evaluation -->"
"""Markers around the card's evaluation section, so results can be replaced in an existing README."""

MODALITY_ROUTES = {"text", "image", "audio", "video", "message"}

DEFAULT_TEXTS = ("A dog runs on the beach.", "Two cats sleep on a couch.", "A plate of pasta with tomatoes.")
DEFAULT_IMAGE_URLS = ("http://images.cocodataset.org/val2017/000000039769.jpg",)
"""Shown for image models when no training images are known (the two-cats photo used in the CLIP docs)."""


@dataclass
class ObliqueModelCardData(SentenceTransformerModelCardData):
    """Model card data for oblique models (the default of :class:`~st_oblique.ObliqueSentenceTransformer`).

    Accepts everything :class:`~sentence_transformers.SentenceTransformerModelCardData` accepts, plus:

    Args:
        evaluation_results: results of the st-oblique evaluation harness, shown as a table: result records, a
            ``summary.json``, a results folder, or a plain ``{task: {metric: value}}`` dict, or a JSON path (see
            :func:`format_evaluation_results`). A ``"command"`` string is shown as the command that produced them.
        token_collapse: token-collapse diagnostics measured on the training data (``{"rows": n, "columns":
            {column: {"mean_pairwise_cosine", "effective_rank", ...}}}``, as ``st-oblique train`` records them);
            shown in the oblique section.
        training_seconds: the training run's own duration (``st-oblique train`` records it), shown as the
            training time; default: Sentence Transformers' measure (from the start of training to the save, so
            evaluations after training count too).
        task_name: what the model can be used for ("... can be used for {task_name}"); default: from its
            modalities (image–text search and zero-shot classification for image-text models, Sentence
            Transformers' text tasks for text models).

    Example::

        import st_oblique
        from st_oblique import ObliqueModelCardData, ObliqueSentenceTransformer

        model = st_oblique.oblique_text_model("sentence-transformers/all-MiniLM-L6-v2")
        model.model_card_data.set_language("en")                     # model.model_card_data is ObliqueModelCardData
        model.model_card_data.evaluation_results = "results/stsb.json"
        model.save("oblique-minilm")   # README.md with the oblique section and the results table

        # or when loading: ObliqueSentenceTransformer(path, model_card_data=ObliqueModelCardData(license="mit"))
    """

    evaluation_results: EvaluationResults | None = None
    token_collapse: dict[str, Any] | None = None
    training_seconds: float | None = None
    task_name: str | None = None
    tags: list[str] = field(
        default_factory=lambda: [
            "sentence-transformers",
            "sentence-similarity",
            "feature-extraction",
            "dense",
            *CARD_TAGS,
        ]
    )

    # Computed once, always unchanged
    template_path: Path = field(default=TEMPLATE_PATH, init=False, repr=False)
    # Text examples of image-text models (usage_examples then holds the images)
    usage_text_examples: list[str] | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_card_data(cls, card_data: SentenceTransformerModelCardData) -> ObliqueModelCardData:
        """An ObliqueModelCardData with the user-given fields of a plain ST card data (tags are merged)."""
        if isinstance(card_data, cls):
            return card_data
        values = {item.name: getattr(card_data, item.name) for item in fields(card_data) if item.init}
        if values.get("task_name") == SentenceTransformerModelCardData.task_name:
            values.pop("task_name")  # ST's default text-model wording: let the modalities decide
        upgraded = cls(**{key: value for key, value in values.items() if key in {f.name for f in fields(cls)}})
        upgraded.add_tags(list(CARD_TAGS))
        return upgraded

    # ---- examples and usage snippet -------------------------------------------------------------------

    def register_model(self, model) -> None:
        super().register_model(model)
        # ST takes any Router for a query/document (IR) model; a router by modality (a dual encoder) is not one.
        routers = [module for module in model.children() if isinstance(module, Router)]
        if routers and set(routers[0].sub_modules) <= MODALITY_ROUTES and not any(model.prompts.values()):
            self.ir_model = False

    def set_losses(self, losses: list) -> None:
        """Sentence Transformers' card callback calls this when any trainer (or ``model.fit``) is built: refuse
        its ``MatryoshkaLoss`` on this oblique model first (see
        :func:`~st_oblique.losses.matryoshka.check_no_sentence_transformers_matryoshka`)."""
        if self.model is not None:
            check_no_sentence_transformers_matryoshka(losses, self.model)
        super().set_losses(losses)

    def extract_dataset_metadata(self, dataset, dataset_metadata, loss, dataset_type, router_mapping=None):
        """Sentence Transformers' card callback calls this with the datasets when any trainer is built (a plain
        ``SentenceTransformerTrainer`` too): check them first, so that a ``None``, a number column or a single
        input column is reported naming the column and row before the first step (see
        :func:`~st_oblique.data.training_data_checks.check_training_dataset`)."""
        if not already_checked():
            check_training_dataset(dataset, name=f"{dataset_type}_dataset", loss=loss)
        return super().extract_dataset_metadata(dataset, dataset_metadata, loss, dataset_type, router_mapping)

    @property
    def is_image_text(self) -> bool:
        """True when the model accepts images (its snippet encodes images and texts)."""
        return self.model is not None and "image" in self.model.modalities

    def set_widget_examples(self, dataset) -> None:
        """ST's examples, plus text examples for image-text models (ST keeps only the images)."""
        super().set_widget_examples(dataset)
        if not self.is_image_text:
            return
        splits = dataset.values() if hasattr(dataset, "values") else [dataset]
        for split in splits:
            columns = [name for name, feature in getattr(split, "features", {}).items() if _is_text_feature(feature)]
            if not columns or not hasattr(split, "__len__") or len(split) == 0:
                continue
            texts = list(dict.fromkeys(split.select(range(min(len(split), 50)))[columns[0]]))[:3]
            if texts:
                self.usage_text_examples = texts
                return

    def run_usage_snippet(self) -> None:
        """Pick the snippet's examples and, when they are local, compute the similarities it prints."""
        if not self.is_image_text:
            super().run_usage_snippet()
            return
        examples = self.usage_examples or []
        texts = [item for item in examples if isinstance(item, str)]
        images = [item for item in examples if not isinstance(item, str)]
        # Without training images, a well-known photo stands for the image side.
        self.usage_examples = images[:3] or list(DEFAULT_IMAGE_URLS)
        self.usage_text_examples = (self.usage_text_examples or texts or list(DEFAULT_TEXTS))[:3]
        self.similarities = None
        if not self.generate_widget_examples or any(isinstance(item, str) for item in self.usage_examples):
            return  # image URLs: never download while saving
        images = list(self.usage_examples)
        image_embeddings = self.model.encode(images, convert_to_tensor=True, show_progress_bar=False)
        text_embeddings = self.model.encode(self.usage_text_examples, convert_to_tensor=True, show_progress_bar=False)
        similarity = self.model.similarity(image_embeddings, text_embeddings)
        self.similarities = "\n".join(f"# {line}" for line in _format_scores(similarity).splitlines())

    def generate_usage_snippet(self) -> str:
        """``import st_oblique`` + ``st_oblique.load(...)``, encode (images and texts), similarities.

        ST's own snippet uses ``SentenceTransformer("id")`` without ``trust_remote_code=True``, which fails
        for oblique models; this one runs as written.
        """
        if self.is_image_text:
            display = self.usage_examples_display or self.usage_examples or list(DEFAULT_IMAGE_URLS)
            groups = [
                ("images", [self._snippet_value(item) for item in display], "encode"),
                ("texts", [repr(text) for text in self.usage_text_examples or DEFAULT_TEXTS], "encode"),
            ]
        elif self.ir_model:
            display = self.usage_examples_display or self.usage_examples or list(DEFAULT_TEXTS)
            groups = [
                ("queries", [self._snippet_value(display[0])], "encode_query"),
                ("documents", [self._snippet_value(item) for item in display[1:]], "encode_document"),
            ]
        else:
            display = self.usage_examples_display or self.usage_examples or list(DEFAULT_TEXTS)
            groups = [("sentences", [self._snippet_value(item) for item in display], "encode")]
        return _snippet(self._snippet_model_id(), groups, self.model.get_embedding_dimension(), self.similarities,
                        num_tokens=self._num_tokens(), backend=getattr(self.model, "backend", "torch"))

    def _snippet_model_id(self) -> str:
        if self.model_id:
            return self.model_id
        return model_id_placeholder(self.model)

    def _snippet_value(self, value: Any) -> str:
        """A snippet literal: ``repr``, with example files saved in ``assets/`` as URLs of the Hub repository."""
        if isinstance(value, str) and value.startswith("assets/"):
            return repr(self.asset_url(value))
        return repr(value)

    def _num_tokens(self) -> int | None:
        try:
            return self._description().num_tokens
        except ValueError:
            return None

    def asset_url(self, relative_path: str, model_id: str | None = None) -> str:
        """The URL of a file of the model's Hub repository (on ``HF_ENDPOINT``, so mirrors and test servers work
        too), or ``relative_path`` unchanged while the model has no Hub id."""
        model_id = model_id or self.model_id
        if model_id:
            return f"{hub_constants.ENDPOINT}/{model_id}/resolve/main/{relative_path}"
        return relative_path

    def asset_urls_for(self, card_text: str, model_id: str) -> str:
        """``card_text`` with its example files (the snippet's ``'assets/...'``, the samples table's
        ``src="assets/..."``) turned into URLs of ``model_id``: the Hub shows a card's relative images as broken."""
        url = self.asset_url("assets/", model_id)
        return card_text.replace("'assets/", "'" + url).replace('src="assets/', 'src="' + url)

    # ---- the oblique section ------------------------------------------------------------------------

    def _description(self) -> ObliqueModelDescription:
        return describe_model(self.model)

    def add_modality_tags(self) -> None:
        """Tags ``modality:text``, ``modality:image``, ... for the modalities the model accepts."""
        if self.model is not None:
            self.add_tags([f"modality:{modality}" for modality in self.model.modalities if isinstance(modality, str)])

    def get_default_model_name(self) -> str:
        """ST's default name, with the base models of a dual encoder joined by "and"."""
        if isinstance(self.base_model, list):
            return f"{self.model.__class__.__name__} based on {' and '.join(self.base_model)}"
        return super().get_default_model_name()

    def get_training_duration_data(self) -> dict[str, str | None]:
        """The training time of the run when recorded (``training_seconds``), else Sentence Transformers' measure."""
        if self.training_seconds is None:
            return super().get_training_duration_data()
        return {"training_time": format_duration(self.training_seconds), "evaluation_time": None, "total_time": None}

    def to_dict(self) -> dict[str, Any]:
        self.add_modality_tags()
        # Base models that are no Hub repository (a local folder, an open_clip name) are named on the card as text.
        named = list(self.base_model) if isinstance(self.base_model, (list, tuple)) else [self.base_model]
        other_base_models = [_base_model_text(name) for name in named if name and not is_hub_model_id(name)]
        # A local folder is no base model for the Hub: its YAML and links would point nowhere. A dual encoder has
        # one base model per tower (the Hub's YAML takes a list); the ones left after dropping local folders stay.
        # Only while Sentence Transformers renders: the names stay, so every rendering of the card says the same.
        original = (self.base_model, self.base_model_revision)
        if isinstance(self.base_model, (list, tuple)):
            hub_models = [name for name in self.base_model if is_hub_model_id(name)]
            self.base_model = hub_models if len(hub_models) > 1 else next(iter(hub_models), None)
            self.base_model_revision = None
        elif self.base_model and not is_hub_model_id(self.base_model):
            self.base_model = self.base_model_revision = None
        rendered_with = self.base_model
        try:
            data = super().to_dict()
        finally:
            if self.base_model == rendered_with:  # unless Sentence Transformers found the base model itself
                self.base_model, self.base_model_revision = original
        data["other_base_models"] = other_base_models
        data["task_name"] = self.task_name or _task_name(self.model)
        data.pop("training_seconds", None)
        try:
            description = self._description()
        except ValueError as error:
            logger.warning(f"The model card has no oblique section: {error}")
            description = None
        data["oblique"] = _oblique_context(description, self.tags) if description is not None else None
        if data["oblique"] is not None:
            data["oblique"]["token_collapse_lines"] = _collapse_lines(self.token_collapse)
        data.pop("token_collapse", None)
        try:
            data["oblique_results"] = format_evaluation_results(self.evaluation_results)
        except ValueError as error:  # a card without results beats no card (ST skips the README on errors)
            logger.warning(f"The model card has no evaluation results: {error}")
            data["oblique_results"] = None
        data["citations"] = _with_paper_citation(data.get("citations") or {})
        data.pop("usage_text_examples", None)
        data.pop("evaluation_results", None)
        self._cached_dict = data
        return data


def _base_model_text(name: str) -> str:
    """A base model that is no Hub repository, for the card: a local folder by its name and path."""
    path = Path(name).expanduser()
    return f"{path.name} (local folder `{name}`)" if path.is_dir() else name


def _task_name(model: SentenceTransformer | None) -> str:
    """What the card says the model can be used for, from its modalities."""
    modalities = set(getattr(model, "modalities", None) or ["text"])
    if "image" in modalities and "text" in modalities:
        return "text-to-image and image-to-text search, and zero-shot image classification with text prompts"
    if modalities == {"image"}:
        return "image search, image similarity and clustering"
    return SentenceTransformerModelCardData.task_name


def _oblique_context(description: ObliqueModelDescription, tags: list[str]) -> dict[str, Any]:
    """Template variables of the oblique section."""
    scale = description.logit_scale
    return {
        **description.to_dict(),
        "logit_scale_text": "not recorded" if scale is None else f"{scale:.4g} ({description.scale_setting})",
        "temperature_text": None if description.temperature is None else f"{description.temperature:.4g}",
        "losses": [tag.split(":", 1)[1] for tag in tags if tag.startswith("loss:")],
        "parameters_text": f"{description.parameters:,}",
    }


def _collapse_lines(collapse: dict[str, Any] | None) -> list[str]:
    """One line per diagnosed column: mean pairwise token cosine and effective rank (only measured numbers)."""
    if not collapse or not isinstance(collapse.get("columns"), dict):
        return []
    lines = []
    for column, stats in collapse["columns"].items():
        try:
            lines.append(
                f"`{column}` ({stats['num_inputs']} inputs of the training data): mean cosine between two tokens "
                f"{stats['mean_pairwise_cosine']:.3f}, effective rank {stats['effective_rank']:.2f} of "
                f"{stats['num_tokens']} per input, {stats['dataset_effective_rank']:.2f} over all tokens"
            )
        except (KeyError, TypeError, ValueError):
            continue
    return lines


def _with_paper_citation(citations: dict[str, str]) -> dict[str, str]:
    """ST's citations plus the paper; a loss citing the paper shares its entry instead of repeating it."""
    merged: dict[str, list[str]] = {}
    for name, citation in [*citations.items(), (PAPER_CITATION_NAME, PAPER_CITATION)]:
        merged.setdefault(citation.strip(), []).append(name)
    return {" and ".join(names): citation for citation, names in merged.items()}


def format_evaluation_results(results: EvaluationResults | None) -> dict[str, Any] | None:
    """Turn evaluation results into the card's table.

    Args:
        results: any of

            - the st-oblique evaluation harness's output: a result record (``{"dataset", "task", "metrics", ...}``,
              CLIP_benchmark's format), a list of records, a ``summary.json`` (``{"results": [records], ...}``),
              or a folder of record files;
            - a plain dict ``{task: {metric: value}}`` (nested to any depth) or ``{metric: value}``;
            - the path of a JSON file holding any of these.

            A top-level ``"command"`` string (or ``settings.command`` of a summary) is shown as the command that
            produced the numbers. Records show the task's main metrics (all their metrics for unknown tasks).

    Returns:
        ``{"section": markdown section, "table": markdown table, "command": str | None,
        "rows": [(task, metric, value)]}``, or None when there are no numbers.

    Raises:
        ValueError: the path does not exist or holds invalid JSON, or ``results`` has an unsupported type.
    """
    if results is None:
        return None
    results = _read_results(results)
    command = None
    if isinstance(results, dict) and isinstance(results.get("results"), list):  # a summary of the harness
        settings = results.get("settings") if isinstance(results.get("settings"), dict) else {}
        command = results.get("command") or settings.get("command")
        results = results["results"]
    if isinstance(results, dict) and _is_record(results):
        results = [results]
    if isinstance(results, list):
        records = [record for record in results if _is_record(record)]
        # Records of one model at several token counts (st-oblique eval --num-tokens, nested-token training): a row
        # per k, labelled with it.
        per_k = len({record.get("num_tokens") for record in records}) > 1
        rows = [row for record in records for row in _record_rows(record, per_k=per_k)]
    elif isinstance(results, dict):
        command = results.get("command")
        rows = list(_numeric_leaves({key: value for key, value in results.items() if key != "command"}, ()))
    else:
        raise ValueError(f"evaluation_results must be a dict, a list of records or a path, got {type(results).__name__}.")
    if not rows:
        return None
    command = command if isinstance(command, str) else None
    lines = ["| Task | Metric | Value |", "|:-----|:-------|------:|"]
    lines += [f"| {task or '-'} | {metric} | {_format_number(value)} |" for task, metric, value in rows]
    table = "\n".join(lines)
    section = f"## st-oblique Evaluation\n\n{table}\n"
    if command:
        section += f"\nThe numbers come from:\n\n```bash\n{command}\n```\n"
    return {"section": section, "table": table, "command": command, "rows": rows}


def _read_results(results: EvaluationResults) -> Any:
    if not isinstance(results, (str, os.PathLike)):
        return results
    path = Path(results)
    if path.is_dir():
        return [record for file in sorted(path.glob("*.json")) if _is_record(record := _read_json(file))]
    if not path.is_file():
        raise ValueError(f"evaluation_results: {path} does not exist; pass results, a JSON file or a results folder.")
    return _read_json(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"evaluation_results: {path} is not valid JSON ({error}).") from error


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("metrics"), dict) and "dataset" in value


def _record_rows(record: dict[str, Any], *, per_k: bool = False):
    """Rows of one harness record: its task's main metrics, or all of them for tasks without a known list
    (labelled with the record's number of tokens when ``per_k``)."""
    task = record.get("task")
    details = [str(task)] if task else []
    if per_k and isinstance(record.get("num_tokens"), int):
        details.append(f"k={record['num_tokens']} tokens")
    if isinstance(record.get("num_samples"), int):  # a subset (--max-samples) must not read as the full set
        details.append(f"{record['num_samples']} samples")
    label = f"{record['dataset']} ({', '.join(details)})" if details else str(record["dataset"])
    metrics = record["metrics"]
    names = [name for name in MAIN_METRICS.get(task, ()) if name in metrics]
    for name in names or list(metrics):
        value = metrics[name]
        if value is None:
            yield label, name, float("nan")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield label, name, float(value)


def set_card_evaluation_results(card_text: str, results: EvaluationResults) -> str:
    """Put the evaluation section into an existing README, keeping everything else of the card.

    Replaces the section between the st-oblique markers; in a card without them the section goes before
    "## Training Details" (or at the end).
    """
    formatted = format_evaluation_results(results)
    block = f"{EVALUATION_START}\n{formatted['section'] if formatted else ''}{EVALUATION_END}"
    start, end = card_text.find(EVALUATION_START), card_text.find(EVALUATION_END)
    if 0 <= start < end:
        return card_text[:start] + block + card_text[end + len(EVALUATION_END) :]
    anchor = card_text.find("\n## Training Details")
    if anchor < 0:
        return card_text.rstrip("\n") + "\n\n" + block + "\n"
    return card_text[: anchor + 1] + block + "\n\n" + card_text[anchor + 1 :]


def _numeric_leaves(results: dict[str, Any], path: tuple[str, ...]):
    for key, value in results.items():
        if isinstance(value, dict):
            yield from _numeric_leaves(value, (*path, str(key)))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield " / ".join(path), str(key), float(value)


def _format_number(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def _is_text_feature(feature: Any) -> bool:
    return getattr(feature, "dtype", None) in {"string", "large_string"}


def _snippet(
    model_id: str,
    groups: list[tuple[str, list[str], str]],
    output_dim: int | str,
    similarities: str | None,
    num_tokens: int | None,
    backend: str = "torch",
) -> str:
    """A runnable Python snippet: load, encode each group, print the similarity of the first and last group.

    An exported model (``backend`` ``"onnx"`` / ``"openvino"``, see :mod:`st_oblique.export`) is loaded with its backend.
    """
    # `model = ObliqueSentenceTransformer("<id>"` is the line Sentence Transformers itself fills in with the Hub id
    # when a card saved before the model had one is pushed (see st_oblique._compat, hook 6).
    lines = [
        "from st_oblique import ObliqueSentenceTransformer",
        "",
        "# Download from the 🤗 Hub (pip install " + ("st-oblique" if backend == "torch" else '"st-oblique[export]"')
        + "). ObliqueSentenceTransformer loads st-oblique's modules",
        "# without trust_remote_code; plain SentenceTransformer(..., trust_remote_code=True) works too.",
        f'model = ObliqueSentenceTransformer("{model_id}"' + ("" if backend == "torch" else f', backend="{backend}"') + ")",
        "# Run inference",
    ]
    for name, items, _ in groups:
        lines.append(f"{name} = [")
        lines += [f"    {item}," for item in items]
        lines.append("]")
    embedding_names = []
    for name, _, method in groups:
        embedding_name = "embeddings" if len(groups) == 1 else f"{_singular(name)}_embeddings"
        embedding_names.append(embedding_name)
        lines.append(f"{embedding_name} = model.{method}({name})")
    lines.append(f"print({', '.join(f'{name}.shape' for name in embedding_names)})")
    lines.append("# " + " ".join(f"[{len(items)}, {output_dim}]" for _, items, _ in groups))
    lines.append("")
    if num_tokens is not None:
        lines.append(f"# Oblique similarity: the sum of the {num_tokens} per-token cosines, in [-{num_tokens}, {num_tokens}]")
    else:
        lines.append("# Get the similarity scores for the embeddings")
    lines.append(f"similarities = model.similarity({embedding_names[0]}, {embedding_names[-1]})")
    if similarities:
        lines += ["print(similarities)", similarities]
    else:
        lines += ["print(similarities.shape)", f"# [{len(groups[0][1])}, {len(groups[-1][1])}]"]
    return "```python\n" + "\n".join(lines) + "\n```"


def _format_scores(scores) -> str:
    """A similarity matrix as ``tensor([[...]])`` text with 4 decimals, for the snippet's printed output."""
    text = np.array2string(scores.detach().cpu().float().numpy(), precision=4, suppress_small=True, separator=", ")
    return "tensor(" + text.replace("\n", "\n       ") + ")"


def _singular(name: str) -> str:
    return {"queries": "query", "documents": "document", "images": "image", "texts": "text"}.get(name, name)


_PLAIN_LOAD_LINE = re.compile(r"""(?<![\w.])SentenceTransformer\(\s*["'][^"']*["']\s*\)""")


def has_unloadable_usage(card_text: str | None) -> bool:
    """Whether a README tells users to load the model with ``SentenceTransformer("id")`` and no other argument.

    That is the line of the cards Sentence Transformers generates; it fails for oblique models (their modules need
    ``trust_remote_code=True`` or ``st_oblique.load``), so such a card is regenerated instead of reused.
    """
    return bool(card_text) and _PLAIN_LOAD_LINE.search(card_text) is not None


def set_evaluation_results(model: SentenceTransformer, results: EvaluationResults) -> None:
    """Show ``results`` in the model's card from the next ``save``/``push_to_hub`` on.

    A card the model was loaded with keeps everything else (its training details cannot be regenerated);
    the results section is replaced in it.

    Raises:
        ValueError: the results cannot be read (see :func:`format_evaluation_results`); nothing is changed.
    """
    format_evaluation_results(results)
    model.model_card_data.evaluation_results = results
    card = loaded_model_card(model)
    if card:
        set_loaded_model_card(model, set_card_evaluation_results(card, results))


def regenerate_model_card(model: SentenceTransformer) -> None:
    """Make the next ``save``/``push_to_hub`` write a fresh card instead of the README the model was loaded with."""
    set_loaded_model_card(model, None)


def write_model_card(
    model: SentenceTransformer,
    output_path: str | os.PathLike,
    *,
    model_id: str | None = None,
    evaluation_results: EvaluationResults | None = None,
) -> Path:
    """Write the model's card (README) to ``output_path`` without saving the model anywhere else.

    A card the model was loaded with keeps its content (training details included) and gets the results
    section; otherwise a fresh card is rendered. ``model_id`` sets the Hub id used by the usage snippet.

    Example::

        import st_oblique
        from st_oblique.model.card import write_model_card

        model = st_oblique.load("runs/lit-oblique")
        write_model_card(model, "model_cards/lit_oblique.md", model_id="me/lit-oblique",
                         evaluation_results="runs/lit-oblique/eval/summary.json")
    """
    if evaluation_results is not None:
        set_evaluation_results(model, evaluation_results)
    if model_id is not None:
        model.model_card_data.set_model_id(model_id)
    with tempfile.TemporaryDirectory() as folder:
        write_model_card_file(model, folder)
        card = Path(folder, "README.md").read_text(encoding="utf-8")
    if model_id is not None:  # a card kept from training was rendered without the id: its example files are relative
        card = model.model_card_data.asset_urls_for(card, model_id)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(card, encoding="utf-8")
    return output_path
