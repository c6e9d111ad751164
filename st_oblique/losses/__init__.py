"""Losses for oblique models: contrastive (InfoNCE), its GradCache variant, and SigLIP's sigmoid loss."""

from st_oblique.losses.cached import CachedObliqueContrastiveLoss
from st_oblique.losses.contrastive import ObliqueContrastiveLoss
from st_oblique.losses.scale import LogitScale
from st_oblique.losses.sigmoid import ObliqueSigmoidLoss
from st_oblique.losses.training import LogitScaleCallback

__all__ = [
    "CachedObliqueContrastiveLoss",
    "LogitScale",
    "LogitScaleCallback",
    "ObliqueContrastiveLoss",
    "ObliqueSigmoidLoss",
]
