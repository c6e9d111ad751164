"""Losses for oblique models: contrastive (InfoNCE), its GradCache variant, and SigLIP's sigmoid loss."""

from st_oblique.losses.cached import CachedObliqueContrastiveLoss
from st_oblique.losses.contrastive import ObliqueContrastiveLoss
from st_oblique.losses.logit_scale_callback import LogitScaleCallback
from st_oblique.losses.scale import LogitScale
from st_oblique.losses.sigmoid import ObliqueSigmoidLoss

__all__ = [
    "CachedObliqueContrastiveLoss",
    "LogitScale",
    "LogitScaleCallback",
    "ObliqueContrastiveLoss",
    "ObliqueSigmoidLoss",
]
