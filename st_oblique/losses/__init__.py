"""Losses for oblique models: contrastive (InfoNCE), its GradCache variant, SigLIP's sigmoid loss, and their nested-token (Matryoshka) wrapper."""

from st_oblique.losses.cached import CachedObliqueContrastiveLoss
from st_oblique.losses.contrastive import ObliqueContrastiveLoss
from st_oblique.losses.logit_scale_callback import LogitScaleCallback
from st_oblique.losses.matryoshka import ObliqueMatryoshkaLoss
from st_oblique.losses.scale import LogitScale
from st_oblique.losses.sigmoid import ObliqueSigmoidLoss

__all__ = [
    "CachedObliqueContrastiveLoss",
    "LogitScale",
    "LogitScaleCallback",
    "ObliqueContrastiveLoss",
    "ObliqueMatryoshkaLoss",
    "ObliqueSigmoidLoss",
]
