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


def test_annoy_neighbors_recall_against_exact():
    """The approximate search used above EXACT_MAX_N points: nearly all true neighbours, never the point itself."""
    from mlplab.inspect.neighbors import approximate_neighbors

    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float64)  # real structure (Annoy's recall on iid noise is lower, ~0.8)
    x[11] = x[10]  # a duplicate pair: each must still not list itself
    found = approximate_neighbors(x, 30, seed=0, n_jobs=2)
    assert found is not None
    idx, dist = found
    exact_idx, exact_dist = exact_neighbors(x, 30)
    assert not (idx == np.arange(len(x))[:, None]).any()
    recall = np.mean([len(set(a) & set(b)) / 30 for a, b in zip(idx, exact_idx)])
    assert recall > 0.94  # measured 0.963-0.966 over seeds
    assert 11 in idx[10] and 10 in idx[11]
    # distances are the true Euclidean distances of the neighbours found
    np.testing.assert_allclose(dist, np.linalg.norm(x[idx] - x[:, None, :], axis=2), rtol=1e-5, atol=1e-5)


def test_data_far_from_the_origin_keeps_exact_neighbors():
    """Points at 1e4 +- 1e-4: without centring, |b|^2 - 2 a.b loses every significant digit (recall was 0.13).
    scikit-learn's brute force uses that expansion too and fails here, so the reference is direct |a - b|."""
    y = np.random.default_rng(4).normal(size=(300, 3)) * 1e-4 + 1e4
    idx, dist = exact_neighbors(y, 5)
    direct = np.linalg.norm(y[:, None, :] - y[None, :, :], axis=2)  # (300, 300)
    np.fill_diagonal(direct, np.inf)
    ref_idx = np.argsort(direct, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, np.take_along_axis(direct, ref_idx, axis=1), rtol=1e-12, atol=0)


def test_input_array_is_not_modified():
    x = np.random.default_rng(5).normal(size=(50, 4)) + 3
    before = x.copy()
    exact_neighbors(x, 3)
    np.testing.assert_array_equal(x, before)
