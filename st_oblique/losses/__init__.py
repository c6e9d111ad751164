"""Losses for oblique models: contrastive (InfoNCE), its GradCache variant, SigLIP's sigmoid loss, and their nested-token (Matryoshka) wrapper."""

from st_oblique.losses.cached import CachedObliqueContrastiveLoss
from st_oblique.losses.contrastive import ObliqueContrastiveLoss
from st_oblique.losses.matryoshka import ObliqueMatryoshkaLoss
from st_oblique.losses.sigmoid import ObliqueSigmoidLoss

__all__ = [
    "CachedObliqueContrastiveLoss",
    "ObliqueContrastiveLoss",
    "ObliqueMatryoshkaLoss",
    "ObliqueSigmoidLoss",
]
