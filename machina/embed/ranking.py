"""Nearest centroids: score goal vectors against a matrix of unit-norm centroids and rank the best.

Written once against the array module ``xp`` (numpy, or cupy on a GPU; see :mod:`machina.embed.arrays`).
Scores are dot products of unit vectors, i.e. cosine similarities in [-1, 1].  Ranking is deterministic:
a higher score first, and among equal scores the earlier menu position first.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy

from machina.embed.arrays import array_module, to_host

Ranked = list[tuple[int, float]]  # (menu index, score), best first


class CentroidMatrix:
    """N centroids, one per row, held on the array module's device (GPU memory with cupy)."""

    def __init__(self, centroids: Any, xp: ModuleType | None = None) -> None:
        self.xp = xp or array_module()
        self.matrix = self.xp.asarray(centroids, dtype=self.xp.float32)
        if self.matrix.ndim != 2:
            raise ValueError(f"centroids must be a 2-D array, got shape {self.matrix.shape}")

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def scores(self, goals: Any) -> Any:
        """``(G, N)`` cosine similarities of G goal vectors against the N centroids, as an ``xp`` array."""
        g = self.xp.asarray(goals, dtype=self.xp.float32)
        if g.ndim == 1:
            g = g[None, :]
        return g @ self.matrix.T

    def rank(self, goals: Any, top_k: int = 1) -> list[Ranked]:
        """For each goal row, the ``top_k`` best centroids as (index, score), best first; ties by index."""
        if len(self) == 0 or top_k < 1:
            rows = 1 if numpy.ndim(goals) == 1 else len(goals)
            return [[] for _ in range(rows)]
        return rank_scores(self.scores(goals), top_k, self.xp)


def rank_scores(scores: Any, top_k: int, xp: ModuleType) -> list[Ranked]:
    n = int(scores.shape[1])
    k = min(top_k, n)
    if k == 1:
        # argmax returns the first of equal maxima: the earliest menu position wins a tie.
        best = xp.argmax(scores, axis=1)
        values = xp.take_along_axis(scores, best[:, None], axis=1)[:, 0]
        return [[(int(i), float(v))] for i, v in zip(to_host(best), to_host(values), strict=True)]
    # Every entry at least as large as the k-th largest (ties at the boundary included), then an exact
    # ordering of those few on the host: -score, then index.
    kth = xp.partition(scores, n - k, axis=1)[:, n - k]
    rows, cols = xp.nonzero(scores >= kth[:, None])
    values = to_host(scores[rows, cols])
    rows_h, cols_h = to_host(rows), to_host(cols)
    order = numpy.lexsort((cols_h, -values, rows_h))
    ranked: list[Ranked] = [[] for _ in range(int(scores.shape[0]))]
    for pos in order:
        row = ranked[int(rows_h[pos])]
        if len(row) < k:
            row.append((int(cols_h[pos]), float(values[pos])))
    return ranked


def normalise_rows(vectors: numpy.ndarray) -> numpy.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    vectors = numpy.asarray(vectors, dtype=numpy.float64)
    # Scale by the largest component first so that squaring huge (finite) values cannot overflow.
    peak = numpy.max(numpy.abs(vectors), axis=-1, keepdims=True) if vectors.size else vectors
    scaled = numpy.divide(vectors, peak, out=numpy.zeros_like(vectors), where=peak > 0)
    norms = numpy.linalg.norm(scaled, axis=-1, keepdims=True)
    out = numpy.divide(scaled, norms, out=numpy.zeros_like(scaled), where=norms > 0)
    return out.astype(numpy.float32)
