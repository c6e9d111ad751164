"""Prompt templates and class names for zero-shot classification, in CLIP_benchmark's formats.

A template is a string with a ``{c}`` placeholder for the class name (``"a photo of a {c}."``). The default
templates are OpenAI's 80 ImageNet templates (shipped with open_clip), which are exactly CLIP_benchmark's
``imagenet1k`` templates and its fallback for datasets without templates of their own.

Files are read in the formats CLIP_benchmark uses:

- JSON ``{dataset: [templates]}`` (``en_zeroshot_classification_templates.json``; a missing dataset falls
  back to ``imagenet1k``, as in CLIP_benchmark), a JSON list, or JSON ``{classname: [prompts]}`` (CuPL-style
  class-specific prompts);
- JSON ``{dataset: [class names]}`` (``en_classnames.json``) or a JSON list for class names;
- text files with one entry per line (``classnames.txt`` / ``zeroshot_classification_templates.txt`` of
  CLIP_benchmark's WebDataset exports).

Example::

    from st_oblique.data.templates import class_prompts, load_templates

    templates = load_templates("en_zeroshot_classification_templates.json", dataset="cifar10")
    prompts = class_prompts(["cat", "dog"], templates)   # [["a photo of a cat.", ...], ["a photo of a dog.", ...]]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

__all__ = [
    "DEFAULT_TEMPLATES",
    "FALLBACK_TEMPLATE_KEY",
    "Templates",
    "class_prompts",
    "load_classnames",
    "load_templates",
]

Templates = Sequence[str] | Mapping[str, Sequence[str]]
"""Either templates with a ``{c}`` placeholder, or class-specific prompts ``{classname: [prompts]}``."""

DEFAULT_TEMPLATES: tuple[str, ...] = tuple(template("{c}") for template in OPENAI_IMAGENET_TEMPLATES)
"""OpenAI's 80 ImageNet templates (= CLIP_benchmark's ``imagenet1k`` templates)."""

FALLBACK_TEMPLATE_KEY = "imagenet1k"
"""The entry CLIP_benchmark uses for datasets that have no templates of their own."""


def class_prompts(classnames: Sequence[str], templates: Templates) -> list[list[str]]:
    """The prompts of every class: ``templates`` filled in with each class name, or the class-specific lists.

    Raises:
        ValueError: a template without ``{c}``, or class-specific prompts missing a class.
    """
    if isinstance(templates, Mapping):
        missing = [name for name in classnames if not templates.get(name)]
        if missing:
            raise ValueError(f"The class-specific prompts have no entry for the classes {missing[:5]}.")
        return [list(templates[name]) for name in classnames]
    if isinstance(templates, str) or not templates:
        raise ValueError(
            f"templates must be a non-empty list of strings with a '{{c}}' placeholder, got {templates!r}."
        )
    bad = [template for template in templates if "{c}" not in template]
    if bad:
        raise ValueError(
            f"Every template needs a '{{c}}' placeholder for the class name (CLIP_benchmark's format), got {bad[:3]}."
        )
    return [[template.format(c=name) for template in templates] for name in classnames]


def load_templates(path: str | Path, dataset: str | None = None, classnames: Sequence[str] | None = None) -> Templates:
    """Templates from a JSON or text file (see the module docstring for the formats).

    Args:
        path: the file.
        dataset: the key to look up in a ``{dataset: [templates]}`` file (falls back to ``imagenet1k``).
        classnames: when given and the file is ``{classname: [prompts]}``, it is returned as class-specific prompts.
    """
    data = _read(path)
    if isinstance(data, list):
        return [str(template) for template in data]
    if classnames and all(name in data for name in classnames):
        return {name: list(data[name]) for name in classnames}
    for key in (dataset, FALLBACK_TEMPLATE_KEY):
        if key is not None and key in data:
            return list(data[key])
    raise ValueError(
        f"{path} has no templates for dataset {dataset!r} and no {FALLBACK_TEMPLATE_KEY!r} fallback "
        f"(keys: {sorted(data)[:10]})."
    )


def load_classnames(path: str | Path, dataset: str | None = None) -> list[str]:
    """Class names from a JSON ``{dataset: [names]}`` / JSON list / one-per-line text file."""
    data = _read(path)
    if isinstance(data, list):
        return [str(name) for name in data]
    if dataset is None or dataset not in data:
        raise ValueError(f"{path} has no class names for dataset {dataset!r} (keys: {sorted(data)[:10]}).")
    return [str(name) for name in data[dataset]]


def _read(path: str | Path) -> list | dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"File not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, (list, dict)):
        raise ValueError(f"{path} must hold a JSON list or object, got {type(data).__name__}.")
    return data
