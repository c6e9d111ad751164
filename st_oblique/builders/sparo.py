"""SPARO: Sparo's read-out (Vani et al., ECCV 2024) as a :class:`~st_oblique.builders.GeometryPreset`."""

from __future__ import annotations

from st_oblique.builders.geometry_preset import GeometryPreset
from st_oblique.citations import SPARO_CITATION

__all__ = ["SPARO"]

SPARO = GeometryPreset(
    name="Sparo",
    citation=SPARO_CITATION,
    token_source="attention",
    num_attention_heads=1,
    per_token_projection=True,
    layer_norm=False,
    reduction="mean",
    scale=1 / 0.07,
    learnable_scale=True,
    max_scale=100.0,
)
"""Sparo's read-out (Vani et al., ECCV 2024, arXiv 2404.15721; code github.com/ankitkv/sparo-clip) with st-oblique's
pieces: K slots, each read by one **single-head** attention query over a tower's token states and projected to d,
each L2-normalized; the loss compares them by the **mean** of the K cosines (Sparo's slots are scaled by 1/√K, so
its dot product is that mean) with CLIP's **learnable temperature** (init 1/0.07, cap 100).

It is the oblique geometry of Sun (arXiv 2209.02127) with another read-out and another scale: the same K unit
tokens and the same ranking (the mean is the sum divided by K), so a Sparo model saved by st-oblique scores with
``"dot"`` (the sum; Sparo's score is ``model.similarity(...) / K``) and is served, evaluated and shared like any
oblique model. Sun's model instead gets its K tokens from K class tokens inside the towers and trains on the raw
sum with a small (capped) temperature. What this preset does not reproduce: Sparo's own parameterization of the
slots (here the slots share one key/value projection and differ by their query and output projection) and any
training recipe beyond the loss.

Example::

    import st_oblique
    from st_oblique.builders import SPARO

    model = SPARO.apply(st_oblique.oblique_dual_encoder(
        "sentence-transformers/all-MiniLM-L6-v2", "timm/vit_small_patch16_224.augreg_in21k",
        num_tokens=16, token_dim=32, text_token_source="attention", image_token_source="attention",
    ))
    loss = st_oblique.ObliqueContrastiveLoss(model, **SPARO.loss_options)   # mean of 16 cosines, CLIP's temperature
"""
