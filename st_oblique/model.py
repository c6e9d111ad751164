"""ObliqueSentenceTransformer: a SentenceTransformer that loads st-oblique models without trust_remote_code."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.util import import_from_string

from st_oblique.modules.serialization import ObliqueLoadError

PACKAGE = "st-oblique"
MIN_READER_VERSION = "0.1.0"
"""Oldest st-oblique release that can read what this release saves (written as a model requirement)."""

MODULE_CLASS_REFS: tuple[str, ...] = (
    "st_oblique.modules.pooling.ObliquePooling",
    "st_oblique.modules.text_class_tokens.ClassTokenTransformer",
)
"""The ``modules.json`` types of st-oblique's module classes. They have at least two dots, so a file in a
model repository can never shadow them (ST's dynamic-module loader rejects such refs)."""


class StObliqueModuleClasses(Mapping[str, type]):
    """Maps ``modules.json`` types under ``st_oblique.`` to the installed classes (imported on demand).

    ST consults this mapping before its ``trust_remote_code`` gate, which exists to stop a model
    configuration from running code the user did not choose. Here the user chose st-oblique by calling its
    loader, and only classes of the installed st-oblique package resolve; every other type (a backbone's
    remote code included) still goes through ST's gate.
    """

    prefix = "st_oblique."

    def __getitem__(self, class_ref: str) -> type:
        if not class_ref.startswith(self.prefix):
            raise KeyError(class_ref)
        try:
            return import_from_string(class_ref)
        except ImportError as error:
            from st_oblique import __version__

            raise ObliqueLoadError(
                f"This model uses the module class {class_ref!r}, which st-oblique {__version__} does not have. "
                'It was probably saved by a newer release: pip install -U "st-oblique".'
            ) from error

    def __iter__(self) -> Iterator[str]:
        return iter(MODULE_CLASS_REFS)

    def __len__(self) -> int:
        return len(MODULE_CLASS_REFS)


class ObliqueSentenceTransformer(SentenceTransformer):
    """A :class:`~sentence_transformers.SentenceTransformer` for oblique models.

    It is an ordinary ``SentenceTransformer`` (``encode``, ``similarity``, ``fit``, the trainer, MTEB all work
    unchanged) with three differences:

    - it loads models that use st-oblique's modules **without** ``trust_remote_code=True``, trusting only the
      classes of the installed st-oblique package (a backbone's remote code still needs the flag);
    - ``similarity_fn_name`` defaults to ``"dot"`` (the sum of per-token cosines);
    - ``save``/``push_to_hub`` record ``st-oblique`` as a requirement of the model, so that loading it where the
      plugin is missing fails with ``pip install -U "st-oblique>=..."`` instead of a traceback.

    Models it saves load with plain ST as well: ``SentenceTransformer(path, trust_remote_code=True)``.

    Example::

        from st_oblique import ObliqueSentenceTransformer

        model = ObliqueSentenceTransformer("user/oblique-minilm")   # a Hub id or a local folder
        embeddings = model.encode(["A cat sits.", "A dog runs."])    # (2, K*d)
        print(model.similarity(embeddings, embeddings))              # sums of K cosines, in [-K, K]
    """

    _module_classes = StObliqueModuleClasses()

    def __init__(self, *args: Any, similarity_fn_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, similarity_fn_name=similarity_fn_name, **kwargs)
        if self._similarity_fn_name is None:
            self.similarity_fn_name = "dot"

    def _get_model_config(self) -> dict[str, Any]:
        config = super()._get_model_config()
        requirements = dict(config.get("requirements") or {})
        requirements[PACKAGE] = {
            "specifier": f">={MIN_READER_VERSION}",
            "reason": "The model uses st-oblique's modules (oblique manifold embeddings).",
        }
        config["requirements"] = requirements
        return config


def load(model_name_or_path: str, **kwargs: Any) -> ObliqueSentenceTransformer:
    """Load an oblique model from a Hub id or a local folder: ``ObliqueSentenceTransformer(model_name_or_path, **kwargs)``."""
    return ObliqueSentenceTransformer(model_name_or_path, **kwargs)
