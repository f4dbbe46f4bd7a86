"""Ranking centroids: best first, ties in menu order, top-k, and numpy/cupy agreement where a GPU exists."""

from __future__ import annotations

import numpy as np
import pytest

from machina.embed.arrays import gpu_module, to_host
from machina.embed.ranking import CentroidMatrix, normalise_rows

GOAL = np.array([1.0, 0.0, 0.0], dtype=np.float32)


def test_best_first_and_ties_in_menu_order() -> None:
    centroids = normalise_rows(np.array([[0, 1, 0], [1, 1, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0]], dtype=np.float64))
    matrix = CentroidMatrix(centroids, np)
    assert matrix.rank(GOAL, top_k=1) == [[(3, pytest.approx(1.0))]]
    ranked = matrix.rank(GOAL, top_k=4)[0]
    assert [i for i, _ in ranked] == [3, 1, 2, 4]  # the three equal scores keep their menu order
    assert ranked[1][1] == ranked[2][1] == ranked[3][1]


def test_tie_for_first_goes_to_the_earlier_item() -> None:
    matrix = CentroidMatrix(normalise_rows(np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=np.float64)), np)
    assert matrix.rank(GOAL, 1)[0][0][0] == 1
    assert [i for i, _ in matrix.rank(GOAL, 2)[0]] == [1, 2]


def test_top_k_larger_than_menu_and_batched_goals() -> None:
    matrix = CentroidMatrix(normalise_rows(np.eye(3)), np)
    goals = normalise_rows(np.array([[0, 0, 1], [0, 2, 1]], dtype=np.float64))
    ranked = matrix.rank(goals, top_k=10)
    assert [i for i, _ in ranked[0]] == [2, 0, 1]
    assert [i for i, _ in ranked[1]] == [1, 2, 0]


def test_empty_matrix_ranks_nothing() -> None:
    assert CentroidMatrix(np.zeros((0, 3)), np).rank(GOAL, 3) == [[]]


def test_normalise_rows_survives_huge_values_and_zero_rows() -> None:
    out = normalise_rows(np.array([[1e300, 1e300], [0.0, 0.0]]))
    np.testing.assert_allclose(out[0], [2**-0.5, 2**-0.5], rtol=1e-6)
    assert not out[1].any()


def test_numpy_and_cupy_agree() -> None:
    cupy = gpu_module()
    if cupy is None:
        pytest.skip("cupy is not installed or no GPU answers: numpy/cupy agreement needs a GPU machine")
    rng = np.random.default_rng(7)
    centroids = normalise_rows(rng.standard_normal((5000, 384)))
    goals = normalise_rows(rng.standard_normal((64, 384)))
    on_cpu, on_gpu = CentroidMatrix(centroids, np), CentroidMatrix(centroids, cupy)
    np.testing.assert_allclose(to_host(on_gpu.scores(goals)), on_cpu.scores(goals), atol=1e-5)
    cpu_scores = on_cpu.scores(goals)
    for k in (1, 5):
        for row, (cpu_row, gpu_row) in enumerate(zip(on_cpu.rank(goals, k), on_gpu.rank(goals, k), strict=True)):
            np.testing.assert_allclose([s for _, s in gpu_row], [s for _, s in cpu_row], atol=1e-5)
            for (ci, _), (gi, _) in zip(cpu_row, gpu_row, strict=True):
                # The same pick, or two candidates whose scores are equal within float tolerance.
                assert ci == gi or abs(cpu_scores[row, ci] - cpu_scores[row, gi]) < 1e-5
    # Exact ties keep menu order on the GPU too.
    tied = np.repeat(centroids[:1], 3, axis=0)
    assert CentroidMatrix(tied, cupy).rank(centroids[0], 3)[0][0][0] == 0
