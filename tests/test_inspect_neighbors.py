"""Exact k nearest neighbours (t-SNE's input) against scikit-learn's brute-force search."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from mlplab.inspect import neighbors
from mlplab.inspect.neighbors import exact_neighbors


@pytest.mark.parametrize("n, d, k", [(500, 50, 90), (37, 3, 36), (200, 1, 5)])
def test_matches_sklearn_brute_force(n, d, k):
    x = np.random.default_rng(n).normal(size=(n, d)) * 10
    idx, dist = exact_neighbors(x, k)
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x).kneighbors(x)
    assert idx.shape == dist.shape == (n, k)
    assert not (idx == np.arange(n)[:, None]).any()  # a point is never its own neighbour
    np.testing.assert_allclose(dist, ref_dist[:, 1:], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(idx, ref_idx[:, 1:])
    assert (np.diff(dist, axis=1) >= 0).all()


def test_blocks_give_the_same_answer_as_one_block(monkeypatch):
    x = np.random.default_rng(1).normal(size=(300, 8))
    whole = exact_neighbors(x, 10)
    monkeypatch.setattr(neighbors, "_BLOCK_ELEMENTS", 300 * 7)  # 7 rows per block, a ragged last block
    blocked = exact_neighbors(x, 10)
    np.testing.assert_array_equal(whole[0], blocked[0])
    np.testing.assert_array_equal(whole[1], blocked[1])


def test_duplicates_have_distance_zero_and_ties_go_by_index():
    x = np.repeat(np.random.default_rng(2).normal(size=(10, 4)), 3, axis=0)  # each point three times
    idx, dist = exact_neighbors(x, 2)
    for i in range(len(x)):
        twins = [j for j in range(3 * (i // 3), 3 * (i // 3) + 3) if j != i]
        assert list(idx[i]) == twins and (dist[i] == 0).all()


@pytest.mark.parametrize("k", [0, 10])
def test_k_out_of_range(k):
    with pytest.raises(ValueError):
        exact_neighbors(np.zeros((10, 2)), k)
