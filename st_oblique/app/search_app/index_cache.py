"""The search app's indexes: the corpus's oblique embeddings in exact inner-product indexes (faiss ``IndexFlatIP``
on the flattened ``K*d`` vectors, whose inner product is the sum of the K per-token cosines), cached on disk.

An index folder holds ``images.faiss`` and/or ``captions.faiss`` next to ``manifest.json``, which records what they
were built from: the model (its weights fingerprint, K and d) and the corpus (every image file with its size and
modification time; the caption table's size, modification time and column). :func:`load_or_build_indexes` reuses a
part whose record still matches and re-encodes only the parts that changed; the folder is replaced in one step
(staged next to it), so an interrupted build leaves the previous index intact.

Fewer tokens: the first k tokens of an oblique embedding score with the sum of the first k cosines
(``encode(..., truncate_dim=k*d)``), which is the full index's inner product with a query whose tokens after the
k-th are zero, so one index serves every k (:meth:`TokenIndex.search`).

Example::

    from st_oblique.app.search_app.index_cache import load_or_build_indexes

    indexes = load_or_build_indexes(model, corpus, "photos-index")   # builds once, then loads
    scores, positions = indexes.images.search(query_embedding, top_k=10)   # (1, 10) each
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm

from st_oblique._version import __version__
from st_oblique.app.search_app.corpus import SearchCorpus
from st_oblique.data.images import load_image
from st_oblique.errors import ObliqueConfigError, ObliqueInputError
from st_oblique.evaluation.identity import weights_fingerprint
from st_oblique.modules.shape import oblique_shape
from st_oblique.output_folder import staged_output_dir

__all__ = [
    "INDEX_FORMAT",
    "MANIFEST",
    "IndexSet",
    "TokenIndex",
    "default_index_dir",
    "load_or_build_indexes",
    "model_identity",
]

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1
"""Version of the index folder's layout; a folder of another version is rebuilt."""
MANIFEST = "manifest.json"
KINDS = ("images", "captions")


@dataclass
class TokenIndex:
    """An exact inner-product index over ``(N, K*d)`` oblique embeddings.

    Attributes:
        index: the faiss ``IndexFlatIP`` (dimension ``K*d``).
        positions: ``(N,)`` the corpus position of each row (items that could not be read are not indexed).
        num_tokens: K.
        token_dim: d.
    """

    index: Any
    positions: list[int]
    num_tokens: int
    token_dim: int

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``top_k`` best rows for each query.

        Args:
            queries: ``(Q, k*d)`` oblique embeddings of the first k tokens (``encode(..., truncate_dim=k*d)``),
                1 <= k <= K; the missing tokens count as zero, so a score is the sum of the first k cosines.
            top_k: results per query (at most the index size).

        Returns:
            ``(scores, positions)``, both ``(Q, min(top_k, N))``: scores in decreasing order, corpus positions.
        """
        queries = np.asarray(queries, dtype=np.float32)
        full = self.num_tokens * self.token_dim
        if queries.ndim != 2 or queries.shape[1] > full or queries.shape[1] % self.token_dim:
            raise ValueError(
                f"queries must be (Q, k*{self.token_dim}) with k <= {self.num_tokens}, got {queries.shape}."
            )
        padded = np.zeros((queries.shape[0], full), dtype=np.float32)
        padded[:, : queries.shape[1]] = queries
        scores, rows = self.index.search(padded, min(top_k, len(self)))
        return scores, np.asarray(self.positions)[rows]

    def vectors(self) -> np.ndarray:
        """``(N, K*d)`` the indexed embeddings."""
        return self.index.reconstruct_n(0, len(self))


@dataclass
class IndexSet:
    """The corpus's indexes and how each was obtained.

    Attributes:
        images: the image index (None without images).
        captions: the caption index (None without captions).
        folder: the index folder.
        built: ``{"images": seconds, ...}`` for parts encoded in this run; parts not listed were loaded.
        skipped: ``[(image, reason)]`` files that could not be read (not indexed).
    """

    images: TokenIndex | None
    captions: TokenIndex | None
    folder: Path
    built: dict[str, float] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        parts = [
            f"{kind} {'built in ' + format(self.built[kind], '.1f') + ' s' if kind in self.built else 'loaded'}"
            for kind in KINDS
            if getattr(self, kind) is not None
        ]
        text = f"index {self.folder} ({', '.join(parts)})"
        if self.skipped:
            text += f"; {len(self.skipped)} unreadable image(s) left out, listed in {self.folder / MANIFEST}"
        return text


def default_index_dir(model: str, corpus: SearchCorpus) -> Path:
    """Where an index is cached when no folder is given: ``$XDG_CACHE_HOME/st-oblique/search-index/<key>`` (else
    ``~/.cache/...``), one folder per model location and corpus (the image folder is never written to)."""
    import hashlib
    import os

    sources = [
        str(Path(model).expanduser().resolve()) if Path(model).expanduser().exists() else model,
        str(corpus.images_root or ""),
        str(corpus.captions_table or ""),
        str(corpus.caption_column or ""),
    ]
    key = hashlib.sha256("\n".join(sources).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "st-oblique" / "search-index" / key


def model_identity(model: SentenceTransformer, name: str) -> dict[str, Any]:
    """What an index depends on in the model: its weights (fingerprint), K and d; ``name`` is informative only."""
    shape = oblique_shape(model, required_by="st-oblique app")
    return {
        "name": name,
        "fingerprint": weights_fingerprint(model),
        "num_tokens": shape.num_tokens,
        "token_dim": shape.token_dim,
    }


def load_or_build_indexes(
    model: SentenceTransformer,
    corpus: SearchCorpus,
    folder: str | Path,
    *,
    identity: dict[str, Any] | None = None,
    batch_size: int = 32,
    show_progress_bar: bool = True,
    rebuild: bool = False,
) -> IndexSet:
    """The corpus's indexes from ``folder``, encoding (with a progress bar) only what is missing or out of date.

    Args:
        model: the oblique model.
        corpus: the images and/or captions.
        folder: the index folder (created; an existing folder must be an index folder or empty).
        identity: :func:`model_identity` of ``model`` when already computed.
        batch_size: images or captions encoded at once.
        show_progress_bar: tqdm bars while encoding.
        rebuild: ignore what the folder holds.

    Raises:
        ObliqueConfigError: ``folder`` exists, is not empty and is not an index folder (nothing is touched).
        ObliqueInputError: no image of the corpus could be read.
    """
    import faiss

    folder = Path(folder).expanduser().absolute()
    identity = identity or model_identity(model, "model")
    manifest = _read_manifest(folder)
    signatures = {"images": _image_signature(corpus), "captions": _caption_signature(corpus)}
    indexes: dict[str, TokenIndex | None] = {}
    entries: dict[str, dict[str, Any]] = {}
    built: dict[str, float] = {}
    skipped: list[tuple[str, str]] = []
    for kind in KINDS:
        if signatures[kind] is None:
            indexes[kind] = None
            continue
        entry = (manifest or {}).get(kind) or {}
        reusable = (
            not rebuild
            and manifest is not None
            and manifest.get("model", {}).get("fingerprint") == identity["fingerprint"]
            and entry.get("signature") == signatures[kind]
            and (folder / f"{kind}.faiss").is_file()
        )
        if reusable:
            index = faiss.read_index(str(folder / f"{kind}.faiss"))
            indexes[kind] = _checked(index, entry, identity, folder / f"{kind}.faiss")
            entries[kind] = entry
            skipped += [tuple(item) for item in entry.get("skipped", [])]
            continue
        start = time.perf_counter()
        if kind == "images":
            embeddings, positions, unreadable = _encode_images(model, corpus, batch_size, show_progress_bar)
        else:
            texts = [caption.text for caption in corpus.captions]
            embeddings = model.encode(
                texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=show_progress_bar
            )
            positions, unreadable = list(range(len(texts))), []
        index = faiss.IndexFlatIP(embeddings.shape[1])
        index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
        indexes[kind] = TokenIndex(index, positions, identity["num_tokens"], identity["token_dim"])
        built[kind] = time.perf_counter() - start
        skipped += unreadable
        entries[kind] = {
            "signature": signatures[kind],
            "positions": None if len(positions) == signatures_count(signatures[kind]) else positions,
            "skipped": [list(item) for item in unreadable],
            "build_seconds": round(built[kind], 3),
        }
    if built or manifest is None or set(entries) != {kind for kind in KINDS if kind in (manifest or {})}:
        _write(folder, indexes, {"format": INDEX_FORMAT, "st_oblique": __version__, "model": identity, **entries})
    return IndexSet(indexes["images"], indexes["captions"], folder, built, skipped)


def signatures_count(signature: dict[str, Any]) -> int:
    """How many items a corpus signature describes."""
    return len(signature["files"]) if "files" in signature else signature["count"]


def _image_signature(corpus: SearchCorpus) -> dict[str, Any] | None:
    if not corpus.images:
        return None
    files = []
    for relative in corpus.images:
        stat = corpus.image_path(relative).stat()
        files.append([relative, stat.st_size, stat.st_mtime_ns])
    return {"root": str(corpus.images_root), "files": files}


def _caption_signature(corpus: SearchCorpus) -> dict[str, Any] | None:
    if not corpus.captions:
        return None
    stat = corpus.captions_table.stat()
    return {
        "table": str(corpus.captions_table),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "column": corpus.caption_column,
        "count": len(corpus.captions),
    }


def _encode_images(
    model: SentenceTransformer, corpus: SearchCorpus, batch_size: int, show_progress_bar: bool
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """``(embeddings (N, K*d), positions, [(file, reason)])``: unreadable files are left out and reported."""
    chunks, positions, unreadable = [], [], []
    with tqdm(total=len(corpus.images), desc="Indexing images", unit="image", disable=not show_progress_bar) as bar:
        for start in range(0, len(corpus.images), batch_size):
            batch, batch_positions = [], []
            for position in range(start, min(start + batch_size, len(corpus.images))):
                try:
                    batch.append(load_image(corpus.image_path(corpus.images[position])))
                    batch_positions.append(position)
                except ObliqueInputError as error:
                    unreadable.append((corpus.images[position], str(error)))
            if batch:
                chunks.append(
                    model.encode(batch, batch_size=len(batch), convert_to_numpy=True, show_progress_bar=False)
                )
                positions += batch_positions
            bar.update(min(batch_size, len(corpus.images) - start))
    if unreadable:
        logger.warning(
            "%d of %d images could not be read and are not indexed, e.g. %s",
            len(unreadable),
            len(corpus.images),
            "; ".join(f"{name}: {reason}" for name, reason in unreadable[:3]),
        )
    if not chunks:
        raise ObliqueInputError(
            f"None of the {len(corpus.images)} images under {corpus.images_root} could be read, e.g. "
            f"{unreadable[0][0]}: {unreadable[0][1]}"
        )
    return np.concatenate(chunks), positions, unreadable


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest; None for a new or empty folder or an outdated/damaged manifest (rebuilt)."""
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise ObliqueConfigError(f"--index {folder}: a file, not a folder; give a folder for the index.")
    path = folder / MANIFEST
    if not path.is_file():
        if any(folder.iterdir()):
            raise ObliqueConfigError(
                f"--index {folder}: this folder is not empty and holds no {MANIFEST}, so it is not a search index "
                "(rebuilding would replace its files); give a new or empty folder."
            )
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.warning("%s cannot be read (%s); rebuilding the index.", path, error)
        return {}
    return manifest if isinstance(manifest, dict) and manifest.get("format") == INDEX_FORMAT else {}


def _checked(index: Any, entry: dict[str, Any], identity: dict[str, Any], path: Path) -> TokenIndex:
    """The cached index as a TokenIndex, refusing one that does not fit its manifest."""
    signature = entry["signature"]
    positions = entry.get("positions") or list(range(signatures_count(signature)))
    dimension = identity["num_tokens"] * identity["token_dim"]
    if index.d != dimension or index.ntotal != len(positions):
        raise ObliqueConfigError(
            f"{path} holds {index.ntotal} vectors of {index.d} floats, its manifest expects {len(positions)} of "
            f"{dimension}: the index folder was modified by hand; delete it (or pass --rebuild-index)."
        )
    return TokenIndex(index, positions, identity["num_tokens"], identity["token_dim"])


def _write(folder: Path, indexes: dict[str, TokenIndex | None], manifest: dict[str, Any]) -> None:
    import faiss

    with staged_output_dir(folder, overwrite=True) as staging:
        for kind, index in indexes.items():
            if index is not None:
                faiss.write_index(index.index, str(staging / f"{kind}.faiss"))
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
