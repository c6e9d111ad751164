"""MUVERA's fixed-dimensional encodings (FDEs) of vector sets, as defined in the paper.

Dhulipala, Hadian, Jayaram, Lee, Mirrokni, "MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings",
NeurIPS 2024 (arXiv 2405.19504), Section 2. One repetition of the encoding:

1. SimHash partitions: ``k`` Gaussian vectors ``g_1..g_k`` split the space into ``B = 2**k`` parts;
   ``phi(x)`` is the bit string ``(<g_1, x> > 0, ..., <g_k, x> > 0)`` read as an integer.
2. Per partition, a query adds its vectors (``q_(b) = sum over phi(q) = b``); a document averages them
   (``p_(b) = mean over phi(p) = b``), and an empty document partition takes the document vector whose bit string
   is nearest to ``b`` in Hamming distance ("empty-partition filling"; ties: the first vector).
3. Inner projection: each block is multiplied by a random ``(d, d_proj)`` matrix of ±1 entries scaled by
   ``1 / sqrt(d_proj)`` (or left as is: ``projection_dimension=None``, the identity).

``num_repetitions`` independent repetitions are concatenated (``R * B * d_proj`` floats), and an optional final
projection (a random ±1 matrix scaled by ``1 / sqrt(d_final)``) maps that to ``final_dimension``. The inner
product of a query FDE and a document FDE approximates the Chamfer similarity ``sum_q max_p <q, p>``, i.e.
ColBERT's MaxSim (the paper's Theorem 2.1), so an ordinary single-vector inner-product index serves it.

Why not a package: ``muvera-python`` 0.2.0 (PyPI, a Python port of Google's graph-mining C++ code) installs here,
but its empty-partition filling converts the partition index with a prefix-XOR "Gray code to binary" where the C++
reference uses ``n ^ (n >> 1)``, so a document vector can be at Hamming distance 1 from its own partition and the
fill picks the wrong vector. The partitions are numbered by their plain bit strings here (the numbering of the
blocks does not change any inner product), which leaves no conversion to get wrong.

Example::

    encoder = FixedDimensionalEncoder(FDEConfig(dimension=32, num_repetitions=8, num_simhash_projections=3,
                                                projection_dimension=8))            # 8 * 8 * 8 = 512 floats
    queries = encoder.encode_queries([q1, q2])       # list of (n_i, 32) arrays -> (2, 512)
    documents = encoder.encode_documents([p1, p2])   # -> (2, 512); queries @ documents.T ~ MaxSim
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class FDEConfig:
    """One FDE design (the paper's notation in brackets).

    Attributes:
        dimension: size ``d`` of the input vectors.
        num_repetitions: independent repetitions concatenated [R_reps].
        num_simhash_projections: SimHash bits per repetition; ``2**k`` partitions [k_sim].
        projection_dimension: inner projection size [d_proj]; None keeps the ``d`` coordinates (identity).
        final_dimension: size of the final random projection [d_final]; None keeps all ``R * B * d_proj``.
        fill_empty_partitions: documents fill an empty partition with the nearest vector (the paper's default).
        seed: the random matrices' seed (the same for queries and documents).
    """

    dimension: int
    num_repetitions: int = 1
    num_simhash_projections: int = 3
    projection_dimension: int | None = None
    final_dimension: int | None = None
    fill_empty_partitions: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dimension < 1 or self.num_repetitions < 1:
            raise ValueError(f"FDE dimension and num_repetitions must be >= 1, got {self}.")
        if not 0 <= self.num_simhash_projections <= 16:
            raise ValueError(f"num_simhash_projections must be in [0, 16] (2**k partitions), got {self}.")
        for name in ("projection_dimension", "final_dimension"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be None or >= 1, got {value}.")

    @property
    def num_partitions(self) -> int:
        return 2**self.num_simhash_projections

    @property
    def block_dimension(self) -> int:
        return self.projection_dimension or self.dimension

    @property
    def encoding_dimension(self) -> int:
        """Floats before the final projection: ``R * B * d_proj``."""
        return self.num_repetitions * self.num_partitions * self.block_dimension

    @property
    def output_dimension(self) -> int:
        return self.final_dimension or self.encoding_dimension

    def describe(self) -> str:
        inner = f"d_proj={self.projection_dimension}" if self.projection_dimension else "identity"
        final = f" -> {self.final_dimension}" if self.final_dimension else ""
        return (
            f"R={self.num_repetitions} k_sim={self.num_simhash_projections} ({self.num_partitions} partitions) "
            f"{inner}: {self.encoding_dimension}{final} floats"
        )

    def to_dict(self) -> dict:
        return asdict(self)


class FixedDimensionalEncoder:
    """Encodes sets of vectors (queries: sums, documents: averages) into FDEs; see the module docstring.

    The random matrices are drawn once from ``config.seed``: ``simhash[r]`` is ``(d, k)``, ``projections[r]`` is
    ``(d, d_proj)`` (None for the identity), ``final`` is ``(R * B * d_proj, d_final)`` (None without a final
    projection). They are attributes so that a test can recompute an encoding from the definition.
    """

    def __init__(self, config: FDEConfig) -> None:
        self.config = config
        rng = np.random.default_rng(config.seed)
        d, k = config.dimension, config.num_simhash_projections
        self.simhash = [rng.standard_normal((d, k)) for _ in range(config.num_repetitions)]
        self.projections: list[np.ndarray | None] = [
            _random_signs(rng, (d, config.projection_dimension)) if config.projection_dimension else None
            for _ in range(config.num_repetitions)
        ]
        self.final = (
            _random_signs(rng, (config.encoding_dimension, config.final_dimension)) if config.final_dimension else None
        )
        # Bit strings of the partitions, most significant bit first: (B, k).
        self.partition_bits = (
            (np.arange(config.num_partitions)[:, None] >> np.arange(k - 1, -1, -1)[None, :]) & 1
        ).astype(bool)

    def encode_queries(self, vector_sets: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, output_dimension)`` float32 query FDEs of N sets of ``(n_i, d)`` vectors (per-partition sums)."""
        return self._encode(vector_sets, is_query=True)

    def encode_documents(self, vector_sets: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, output_dimension)`` float32 document FDEs (per-partition averages, empty partitions filled)."""
        return self._encode(vector_sets, is_query=False)

    def _encode(self, vector_sets: Sequence[np.ndarray], is_query: bool) -> np.ndarray:
        config = self.config
        sets = [np.asarray(vectors, dtype=np.float32) for vectors in vector_sets]
        for index, vectors in enumerate(sets):
            if vectors.ndim != 2 or vectors.shape[1] != config.dimension or len(vectors) == 0:
                raise ValueError(
                    f"Vector set {index} has shape {vectors.shape}; every set needs at least one vector of size "
                    f"{config.dimension} (FDEConfig.dimension)."
                )
        count = len(sets)
        if count == 0:
            return np.zeros((0, config.output_dimension), dtype=np.float32)
        lengths = np.array([len(vectors) for vectors in sets])
        owners = np.repeat(np.arange(count), lengths)
        points = np.concatenate(sets)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        padded_index = np.full((count, lengths.max()), -1)
        padded_index[owners, np.arange(len(points)) - starts[owners]] = np.arange(len(points))
        blocks = []
        for repetition in range(config.num_repetitions):
            bits = (points @ self.simhash[repetition].astype(np.float32)) > 0  # (P, k)
            partition = bits.astype(np.int64) @ (1 << np.arange(config.num_simhash_projections - 1, -1, -1))
            projection = self.projections[repetition]
            projected = points if projection is None else points @ projection.astype(np.float32)
            sums = np.zeros((count, config.num_partitions, config.block_dimension), dtype=np.float64)
            np.add.at(sums, (owners, partition), projected)
            if not is_query:
                sizes = np.zeros((count, config.num_partitions))
                np.add.at(sizes, (owners, partition), 1.0)
                sums /= np.maximum(sizes, 1.0)[..., None]
                if config.fill_empty_partitions and config.num_simhash_projections > 0:
                    self._fill_empty(sums, sizes, bits, projected, padded_index)
            blocks.append(sums.reshape(count, -1))
        encoding = np.concatenate(blocks, axis=1)
        if self.final is not None:
            encoding = encoding @ self.final
        return encoding.astype(np.float32)

    def _fill_empty(
        self, sums: np.ndarray, sizes: np.ndarray, bits: np.ndarray, projected: np.ndarray, padded_index: np.ndarray
    ) -> None:
        """Empty partition b of a document <- its vector whose bit string is nearest to b (first on ties)."""
        distances = (bits[:, None, :] != self.partition_bits[None, :, :]).sum(-1)  # (P, B) Hamming
        padded = np.where(padded_index[..., None] >= 0, distances[padded_index], np.iinfo(np.int64).max)  # (N, T, B)
        nearest = padded_index[np.arange(len(padded_index))[:, None], padded.argmin(axis=1)]  # (N, B) point ids
        empty = sizes == 0
        sums[empty] = projected[nearest[empty]]


def _random_signs(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A ``shape`` matrix of independent ±1 entries scaled by ``1 / sqrt(columns)`` (a JL random projection)."""
    return rng.choice(np.array([-1.0, 1.0]), size=shape) / np.sqrt(shape[1])


__all__ = ["FDEConfig", "FixedDimensionalEncoder"]
