"""The search behind the app, without the user interface: queries (a text or an image) against the corpus's image
and caption indexes with the first k of the model's K tokens, and the per-token explanation of one result.

Scores are oblique similarities: the sum of the k per-token cosines, the inner product of the flattened embeddings
(``model.similarity`` at ``truncate_dim=k*d``). An explanation splits one score into its K cosines
(:func:`st_oblique.diagnostics.explanations.explain_pair`) and, when the pair holds an image whose tokens have their
own attention (class tokens inside a ViT, or the LiT dual encoder's attention pooling), draws the attention of the
top tokens over it (:func:`~st_oblique.diagnostics.explanations.attention_image`).

Example::

    engine = SearchEngine(model, corpus, indexes, name="runs/lit-oblique")
    query = engine.text_query("a dog runs on the beach")          # or engine.image_query("photo.jpg")
    results = engine.search(query, num_tokens=4, top_k=10)
    results.images[0]                      # Hit(kind="image", rank=1, position=..., score=..., item="dogs/1.jpg")
    detail = engine.explain(query, results.images[0], num_tokens=4)
    detail.contributions                   # (K,) cosines; sum(detail.contributions[:4]) == results.images[0].score
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image
from sentence_transformers import SentenceTransformer

from st_oblique.app.search_app.corpus import SearchCorpus
from st_oblique.app.search_app.index_cache import IndexSet, TokenIndex, load_or_build_indexes, model_identity
from st_oblique.data.images import load_image
from st_oblique.diagnostics.explanations import attention_image, explain_pair, token_attention_maps
from st_oblique.errors import ObliqueConfigError, ObliqueInputError
from st_oblique.modules.shape import oblique_shape

__all__ = ["Explained", "Hit", "QueryError", "SearchEngine", "SearchResults", "open_engine"]

Query = str | Image.Image
MAPS_SHOWN = 4
"""Attention maps drawn in an explanation: the tokens with the largest contributions among the k used."""


class QueryError(ObliqueInputError):
    """A query the app cannot run (empty text, unreadable image, an image for a text-only model); the message is
    shown in the page."""


@dataclass(frozen=True)
class Hit:
    """One result.

    Attributes:
        kind: ``"image"`` or ``"caption"``.
        rank: 1 for the best.
        position: the item's position in ``corpus.images`` or ``corpus.captions``.
        score: the sum of the first k per-token cosines with the query.
        item: the image's relative path, or the caption's text.
        image: the caption's image (relative path or the table's name), for captions.
    """

    kind: Literal["image", "caption"]
    rank: int
    position: int
    score: float
    item: str
    image: str | None = None


@dataclass
class SearchResults:
    """The results of one query with the first ``num_tokens`` tokens."""

    num_tokens: int
    images: list[Hit] = field(default_factory=list)
    captions: list[Hit] = field(default_factory=list)


@dataclass
class Explained:
    """One result's score split into its K per-token cosines.

    Attributes:
        hit: the result.
        num_tokens: k, the tokens the ranking used (the first k).
        contributions: ``(K,)`` per-token cosines; ``sum(contributions[:num_tokens])`` is the hit's score.
        figure: the attention of the top tokens over the pair's image (a PIL image), or None.
        note: why there is no figure, when there is none.
    """

    hit: Hit
    num_tokens: int
    contributions: list[float]
    figure: Any = None
    note: str | None = None

    @property
    def score(self) -> float:
        return float(sum(self.contributions[: self.num_tokens]))


class SearchEngine:
    """Text and image queries over a :class:`SearchCorpus` indexed by
    :func:`~st_oblique.app.search_app.index_cache.load_or_build_indexes`.

    Args:
        model: the oblique model the indexes were built with.
        corpus: the images and/or captions.
        indexes: their indexes.
        name: the model's name or path (shown in the page).
    """

    def __init__(self, model: SentenceTransformer, corpus: SearchCorpus, indexes: IndexSet, name: str) -> None:
        shape = oblique_shape(model, required_by="st-oblique app")
        self.model = model
        self.corpus = corpus
        self.indexes = indexes
        self.name = name
        self.num_tokens = shape.num_tokens
        self.token_dim = shape.token_dim
        self.has_image_tower = bool(model.supports("image"))

    def describe(self) -> str:
        """One line: the model, K and d, what is indexed."""
        towers = "image and text" if self.has_image_tower else "text only"
        return f"{self.name}: K={self.num_tokens} tokens of d={self.token_dim} ({towers}); {self.corpus.describe()}"

    def text_query(self, text: str | None) -> str:
        """The text of a query box, stripped.

        Raises:
            QueryError: an empty text.
        """
        if text is None or not str(text).strip():
            raise QueryError("The query is empty: type what to search for, e.g. “a dog runs on the beach”.")
        return str(text).strip()

    def image_query(self, image: Any) -> Image.Image:
        """An uploaded image (a file path or a PIL image) as an RGB PIL image.

        Raises:
            QueryError: no image, an unreadable file, or a model without an image tower.
        """
        if not self.has_image_tower:
            raise QueryError(
                f"{self.name} has no image tower (it embeds text only), so it cannot search with an image; "
                "use a text query, or start the app with an image-text model."
            )
        if image is None:
            raise QueryError("No image: upload one (JPEG, PNG, WebP, ...) or pick a result's “more like this”.")
        try:
            return load_image(image)
        except ObliqueInputError as error:
            raise QueryError(f"The uploaded file cannot be used as an image. {error}") from error

    def embed(self, query: Query, num_tokens: int) -> np.ndarray:
        """``(1, k*d)``: the query's first ``k = num_tokens`` tokens, ``encode(..., truncate_dim=k*d)``."""
        num_tokens = self.check_num_tokens(num_tokens)
        return self.model.encode(
            [query], truncate_dim=num_tokens * self.token_dim, convert_to_numpy=True, show_progress_bar=False
        )

    def check_num_tokens(self, num_tokens: int) -> int:
        num_tokens = int(num_tokens)
        if not 1 <= num_tokens <= self.num_tokens:
            raise QueryError(f"The token count must be 1 to {self.num_tokens}, got {num_tokens}.")
        return num_tokens

    def search(self, query: Query, num_tokens: int, top_k: int) -> SearchResults:
        """The ``top_k`` images and captions nearest to ``query`` (from :meth:`text_query` or :meth:`image_query`)
        with the first ``num_tokens`` tokens."""
        embedding = self.embed(query, num_tokens)
        results = SearchResults(num_tokens=int(num_tokens))
        if self.indexes.images is not None:
            results.images = self._hits("image", self.indexes.images, embedding, top_k)
        if self.indexes.captions is not None:
            results.captions = self._hits("caption", self.indexes.captions, embedding, top_k)
        return results

    def _hits(
        self, kind: Literal["image", "caption"], index: TokenIndex, embedding: np.ndarray, top_k: int
    ) -> list[Hit]:
        scores, positions = index.search(embedding, top_k)
        hits = []
        for rank, (score, position) in enumerate(zip(scores[0].tolist(), positions[0].tolist(), strict=True), start=1):
            if kind == "image":
                hits.append(Hit(kind, rank, position, score, self.corpus.images[position]))
            else:
                caption = self.corpus.captions[position]
                hits.append(Hit(kind, rank, position, score, caption.text, caption.image))
        return hits

    def explain(self, query: Query, hit: Hit, num_tokens: int) -> Explained:
        """``hit``'s score with ``query`` split into its K per-token cosines, and the attention of the top tokens
        (among the first ``num_tokens``) over the pair's image (the result's, else the query's)."""
        num_tokens = self.check_num_tokens(num_tokens)
        item: Query = load_image(self.corpus.image_path(hit.item)) if hit.kind == "image" else hit.item
        explanation = explain_pair(self.model, query, item)
        result = Explained(hit=hit, num_tokens=num_tokens, contributions=explanation.contributions)
        image = item if isinstance(item, Image.Image) else query if isinstance(query, Image.Image) else None
        if image is None:
            result.note = "No attention maps: neither side of this pair is an image."
            return result
        maps = token_attention_maps(self.model, image)
        if maps is None:
            result.note = (
                "No attention maps: this model's image tokens have no attention of their own (token_source 'split' "
                "or 'last'); class tokens inside a ViT and attention pooling have one map per token."
            )
            return result
        used = [k for k in explanation.ranking if k < num_tokens][:MAPS_SHOWN]
        label = hit.item if hit.kind == "image" else "the query image"
        result.figure = attention_image(
            image,
            maps,
            explanation.contributions,
            title=f"Where the top {len(used)} tokens look in {label}",
            columns=2,
            tokens=used,
        )
        return result


def open_engine(
    model: SentenceTransformer,
    corpus: SearchCorpus,
    index_dir: str | os.PathLike,
    *,
    name: str,
    batch_size: int = 32,
    show_progress_bar: bool = True,
    rebuild: bool = False,
) -> SearchEngine:
    """A :class:`SearchEngine` over ``corpus``, its indexes loaded from ``index_dir`` or built there.

    Raises:
        ObliqueConfigError: images to index with a model that has no image tower, or an unusable ``index_dir``.
    """
    if corpus.images and not model.supports("image"):
        raise ObliqueConfigError(
            f"{name} has no image tower (it embeds {', '.join(model.modalities)} only), so it cannot index images. "
            "Give an image-text model, or search the texts of a table with --captions TABLE (without --images-root)."
        )
    identity = model_identity(model, name)
    indexes = load_or_build_indexes(
        model,
        corpus,
        index_dir,
        identity=identity,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        rebuild=rebuild,
    )
    return SearchEngine(model, corpus, indexes, name)
