"""Losses for oblique models."""

from st_oblique.losses.contrastive import ObliqueContrastiveLoss

__all__ = ["ObliqueContrastiveLoss"]
