"""st-oblique: oblique-manifold embeddings (K unit tokens of size d) for sentence-transformers.

Public names are imported lazily, so ``import st_oblique`` is cheap until a model is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC: dict[str, str] = {
    "manifold": "st_oblique.manifold",
    "ObliquePooling": "st_oblique.modules.pooling",
    "ClassTokenTransformer": "st_oblique.modules.text_class_tokens",
    "ObliqueLoadError": "st_oblique.modules.serialization",
    "ObliqueSentenceTransformer": "st_oblique.model",
    "load": "st_oblique.model",
    "oblique_text_model": "st_oblique.builders",
    "ObliqueContrastiveLoss": "st_oblique.losses.contrastive",
    "CachedObliqueContrastiveLoss": "st_oblique.losses.cached",
    "ObliqueSigmoidLoss": "st_oblique.losses.sigmoid",
    "oblique_clip": "st_oblique.builders",
    "oblique_open_clip": "st_oblique.builders",
    "oblique_dual_encoder": "st_oblique.builders",
    "evaluation": "st_oblique.evaluation",
    "ObliqueModelCardData": "st_oblique.model_card",
    "describe_model": "st_oblique.description",
    "ObliqueModelDescription": "st_oblique.description",
    "push_to_hub": "st_oblique.hub",
    "HubPushError": "st_oblique.hub",
    "TrainConfig": "st_oblique.training_config",
    "train": "st_oblique.training",
    "run_demo": "st_oblique.demo",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module_name = _PUBLIC.get(name)
    if module_name is None:
        raise AttributeError(f"module 'st_oblique' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from st_oblique import manifold
    from st_oblique.builders import oblique_clip, oblique_dual_encoder, oblique_open_clip, oblique_text_model
    from st_oblique.demo import run_demo
    from st_oblique.description import ObliqueModelDescription, describe_model
    from st_oblique.hub import HubPushError, push_to_hub
    from st_oblique.losses.cached import CachedObliqueContrastiveLoss
    from st_oblique.losses.contrastive import ObliqueContrastiveLoss
    from st_oblique.losses.sigmoid import ObliqueSigmoidLoss
    from st_oblique.model import ObliqueSentenceTransformer, load
    from st_oblique.model_card import ObliqueModelCardData
    from st_oblique.modules.pooling import ObliquePooling
    from st_oblique.modules.serialization import ObliqueLoadError
    from st_oblique.modules.text_class_tokens import ClassTokenTransformer
    from st_oblique.training import train
    from st_oblique.training_config import TrainConfig
