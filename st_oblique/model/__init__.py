"""The oblique SentenceTransformer as a saved artefact: loading and saving it, its files, its card and the Hub.

- :mod:`~st_oblique.model.sentence_transformer`: :class:`ObliqueSentenceTransformer` and :func:`load`;
- :mod:`~st_oblique.model.files`: checks of a saved folder (what is missing or damaged, and how to fix it);
- :mod:`~st_oblique.model.loading_options`: the loading arguments every builder accepts;
- :mod:`~st_oblique.model.description` and :mod:`~st_oblique.model.card`: what the model is, and its model card;
- :mod:`~st_oblique.model.push`, :mod:`~st_oblique.model.hub_errors`, :mod:`~st_oblique.model.hub_ids`: the Hub.

The Hub push lives here, with the class it pushes, because the class itself needs the card and the Hub's error
explanations: one package keeps those arrows inside it (no import cycle between packages).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from st_oblique.lazy_exports import lazy_exports

_PUBLIC: dict[str, str] = {
    "ObliqueSentenceTransformer": "st_oblique.model.sentence_transformer",
    "load": "st_oblique.model.sentence_transformer",
    "ObliqueModelCardData": "st_oblique.model.card",
    "describe_model": "st_oblique.model.description",
    "ObliqueModelDescription": "st_oblique.model.description",
    "push_to_hub": "st_oblique.model.push",
}
__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())

if TYPE_CHECKING:
    from st_oblique.model.card import ObliqueModelCardData
    from st_oblique.model.description import ObliqueModelDescription, describe_model
    from st_oblique.model.push import push_to_hub
    from st_oblique.model.sentence_transformer import ObliqueSentenceTransformer, load
