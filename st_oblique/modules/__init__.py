"""Sentence Transformers modules of st-oblique."""

from st_oblique.modules.pooling import ObliquePooling
from st_oblique.modules.serialization import ObliqueLoadError
from st_oblique.modules.text_class_tokens import ClassTokenTransformer

__all__ = ["ClassTokenTransformer", "ObliqueLoadError", "ObliquePooling"]
