"""The backbone families st-oblique builds oblique models from: one table, read by everything that lists them.

:data:`BACKBONE_FAMILIES` maps each family's name (``st-oblique train --backbone NAME``) to its builder and what the
command line needs to know about it. The ``--backbone`` choices, the checks of a training configuration, the error
hints and :func:`st_oblique.app.train_pipeline.build_model` all read it, so a new family is one builder file and one
row here (plus the module classes it saves, registered in :data:`st_oblique.modules.MODULE_CLASSES`).

The table is torch-free: builders are dotted references resolved on first use (:meth:`BackboneFamily.load_builder`),
so ``st-oblique --help`` and the configuration checks run before torch is imported.

Example::

    from st_oblique.builders.families import BACKBONE_FAMILIES

    family = BACKBONE_FAMILIES["text"]
    family.hint                      # "--backbone text takes a Hugging Face text encoder ..."
    build = family.load_builder()    # st_oblique.oblique_text_model
    model = build("sentence-transformers/all-MiniLM-L6-v2", num_tokens=16, token_dim=32)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["BACKBONE_FAMILIES", "BackboneFamily", "builder_exports", "family_of", "family_option_names"]


@dataclass(frozen=True)
class BackboneFamily:
    """One kind of backbone st-oblique builds an oblique model from.

    Attributes:
        name: the family's name (``--backbone NAME``).
        builder: ``"module:function"`` of its builder; every builder takes ``num_tokens``, ``token_dim``,
            ``per_token_projection``, ``layer_norm`` and ``device`` by keyword.
        summary: what the family builds on, in a few words (``--help`` lists these).
        hint: what ``--backbone NAME`` takes, shown when the backbone cannot be built.
        arguments: the options naming the backbone (fields of ``TrainConfig``), in the order the builder takes
            them positionally; ``required`` of them must be given.
        required: the ``arguments`` that must be given.
        options: further options the family takes: ``{option: builder keyword}`` (``None``: the command line acts
            on the option itself, e.g. registers an open_clip config file); an unset option (None) is not passed.
        modalities: what the model encodes.
        module_classes: the names of the Sentence Transformers module classes the built model is made of
            (registered in :data:`st_oblique.modules.MODULE_CLASSES`).
    """

    name: str
    builder: str
    summary: str
    hint: str
    arguments: tuple[str, ...]
    required: tuple[str, ...]
    options: Mapping[str, str | None] = field(default_factory=dict)
    modalities: tuple[str, ...] = ("text", "image")
    module_classes: tuple[str, ...] = ()

    def load_builder(self) -> Callable[..., Any]:
        """The builder function (imports its module, and with it torch)."""
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)

    def builder_arguments(self, values: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The builder's positional and family-specific keyword arguments taken from option ``values``.

        Unset options (None) are left out, so the builder's defaults apply.
        """
        positional = [values.get(name) for name in self.arguments]
        while positional and positional[-1] is None:  # an optional trailing argument (open_clip's pretrained)
            positional.pop()
        keywords = {
            keyword: values[option]
            for option, keyword in self.options.items()
            if keyword is not None and values.get(option) is not None
        }
        return positional, keywords


_TEXT_ENCODER_OPTIONS = {"max_seq_length": "max_seq_length", "trust_remote_code": "trust_remote_code"}
_LATE_CLASS_TOKEN_OPTIONS = {
    "class_attention_layers": "class_attention_layers",
    "class_attention_width": "class_attention_width",
}
"""The options of ``token_source="class_attention"`` (late class tokens), which every family takes."""

BACKBONE_FAMILIES: Mapping[str, BackboneFamily] = MappingProxyType({
    family.name: family
    for family in (
        BackboneFamily(
            name="clip",
            builder="st_oblique.builders.clip:oblique_clip",
            summary="a Hugging Face CLIP",
            hint="--backbone clip takes a Hugging Face CLIP model id (e.g. openai/clip-vit-base-patch32) or a local "
            "folder.",
            arguments=("model",),
            required=("model",),
            options={**_TEXT_ENCODER_OPTIONS, "token_source": "token_source", **_LATE_CLASS_TOKEN_OPTIONS},
            module_classes=("CLIPClassTokenTransformer", "ObliquePooling"),
        ),
        BackboneFamily(
            name="open_clip",
            builder="st_oblique.builders.open_clip:oblique_open_clip",
            summary="an open_clip model",
            hint="--backbone open_clip takes an open_clip model name (open_clip.list_models(), hf-hub:org/repo, "
            "local-dir:/path) with --pretrained TAG, or --open-clip-config FILE for a custom architecture.",
            arguments=("model", "pretrained"),
            required=("model",),
            options={"max_seq_length": "max_seq_length", "open_clip_model_kwargs": "config_kwargs",
                     "open_clip_config": None, "token_source": "token_source", **_LATE_CLASS_TOKEN_OPTIONS},
            module_classes=("OpenCLIPEncoder", "ObliquePooling"),
        ),
        BackboneFamily(
            name="text",
            builder="st_oblique.builders.text:oblique_text_model",
            summary="a text encoder",
            hint="--backbone text takes a Hugging Face text encoder or Sentence Transformers model (id or folder).",
            arguments=("model",),
            required=("model",),
            options={**_TEXT_ENCODER_OPTIONS, "token_source": "token_source", **_LATE_CLASS_TOKEN_OPTIONS},
            modalities=("text",),
            module_classes=("ClassTokenTransformer", "ObliquePooling"),
        ),
        BackboneFamily(
            name="dual",
            builder="st_oblique.builders.dual:oblique_dual_encoder",
            summary="a text and an image tower",
            hint="--backbone dual takes --text-model (a text encoder) and --image-model (a HF/timm image model), ids "
            "or folders.",
            arguments=("text_model", "image_model"),
            required=("text_model", "image_model"),
            options={**_TEXT_ENCODER_OPTIONS, "token_source": "text_token_source",
                     "image_token_source": "image_token_source", **_LATE_CLASS_TOKEN_OPTIONS},
            module_classes=("ModalityRouter", "ClassTokenTransformer", "ImageClassTokenTransformer", "ObliquePooling"),
        ),
    )
})
"""Every backbone family, by name (the order of ``--backbone``'s choices)."""


def family_option_names() -> dict[str, list[str]]:
    """``{option: [families that take it]}`` for every option some family takes and another does not."""
    takers: dict[str, list[str]] = {}
    for family in BACKBONE_FAMILIES.values():
        for option in (*family.arguments, *family.options):
            takers.setdefault(option, []).append(family.name)
    return {option: names for option, names in takers.items() if len(names) < len(BACKBONE_FAMILIES)}


def builder_exports() -> dict[str, str]:
    """``{builder name: its module}`` of every family: the builders :mod:`st_oblique` and :mod:`st_oblique.builders`
    export (``st_oblique.oblique_text_model``, ...)."""
    return dict(reversed(family.builder.split(":")) for family in BACKBONE_FAMILIES.values())


def family_of(module_classes: Iterable[str]) -> BackboneFamily | None:
    """The family whose builder makes a model of exactly these st-oblique module classes (names, e.g.
    ``{"ClassTokenTransformer", "ObliquePooling"}``), or None (a converted model, or one assembled by hand)."""
    found = set(module_classes)
    return next((family for family in BACKBONE_FAMILIES.values() if set(family.module_classes) == found), None)
