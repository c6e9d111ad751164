"""One-line builders that turn pretrained backbones into oblique SentenceTransformer models, one file per backbone
family, listed in one table (:data:`~st_oblique.builders.families.BACKBONE_FAMILIES`).

- :func:`oblique_text_model` (``text``): a bidirectional text encoder, K class tokens prepended;
- :func:`oblique_clip` (``clip``): a Hugging Face CLIP, K class tokens in both towers;
- :func:`oblique_open_clip` (``open_clip``): any open_clip model, K class tokens in both towers;
- :func:`oblique_dual_encoder` (``dual``): a text and an image tower (LiT-style);
- :class:`GeometryPreset` and :data:`SPARO`: another method's geometry with st-oblique's pieces.

Every builder takes its backbone argument(s) positionally and everything else by keyword, with the loading options
of Sentence Transformers under the same names (:data:`~st_oblique.model.loading_options.LOADING_OPTIONS`,
declared once by :func:`~st_oblique.model.loading_options.with_loading_options`); an option a backbone cannot
honour raises a ``ValueError`` that says what to do instead.

To add a backbone family: write its builder in a new file here and add a row to
:data:`~st_oblique.builders.families.BACKBONE_FAMILIES` (the builder is then exported from here and from
``st_oblique``, and is a ``--backbone`` choice); register any new module class in
:data:`st_oblique.modules.MODULE_CLASSES`.

Names are imported on first use, so reading the family table imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from st_oblique.builders.families import builder_exports
from st_oblique.lazy_exports import lazy_exports

# public name -> module that defines it (each family's builder, from the family table)
_PUBLIC: dict[str, str] = {
    **builder_exports(),
    "GeometryPreset": "st_oblique.builders.geometry_preset",
    "SPARO": "st_oblique.builders.sparo",
    "init_heads_from_projections": "st_oblique.builders.assembly",
    "BACKBONE_FAMILIES": "st_oblique.builders.families",
    "BackboneFamily": "st_oblique.builders.families",
}

__all__ = list(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())


if TYPE_CHECKING:
    from st_oblique.builders.assembly import init_heads_from_projections
    from st_oblique.builders.clip import oblique_clip
    from st_oblique.builders.dual import oblique_dual_encoder
    from st_oblique.builders.families import BACKBONE_FAMILIES, BackboneFamily
    from st_oblique.builders.geometry_preset import GeometryPreset
    from st_oblique.builders.open_clip import oblique_open_clip
    from st_oblique.builders.sparo import SPARO
    from st_oblique.builders.text import oblique_text_model
