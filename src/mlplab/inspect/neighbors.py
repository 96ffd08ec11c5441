"""Exact k nearest neighbours by blocked matrix products (torch), for t-SNE's affinities.

Why: openTSNE's default above ~1,000 points is an approximate Annoy index queried point by point through
joblib, where the scheduling costs more than the search. The exact answer is one (N, D) x (D, N) product in
row blocks plus a top-k per block, with no approximation. Above EXACT_MAX_N points the N^2 work outgrows an
index, and approximate_neighbors builds the Annoy index openTSNE would (its bundled copy) with fewer trees,
queried in contiguous chunks on a thread each instead of one joblib task per point. Timings: docs/INTERNALS.md.
"""

from __future__ import annotations

import numpy as np

EXACT_MAX_N = 30_000
_BLOCK_ELEMENTS = 32 * 1024 * 1024  # distance entries per block (float64: 256 MiB at most)
_DIRECT_ROWS = 1024                  # rows per direct recomputation (fewer for wide data: see direct_rows)


def _check_k(n: int, k: int) -> None:
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} points, got {k}")


def exact_neighbors(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (N, k) int64, distances (N, k) float64), nearest first, each point's own row excluded.

    Candidates come from |b|^2 - 2 a.b in float64 (one matrix product per row block); the kept distances
    are then computed directly, |a - b|, so duplicates are exactly 0 apart. Equal distances are ordered by
    index, so the result does not depend on the thread count or the block size.
    """
    import torch

    t = torch.from_numpy(np.array(x, dtype=np.float64))  # (N, D), a copy: centred in place below
    n, dims = t.shape
    _check_k(n, k)
    # Centred first: distances do not change, but |b|^2 - 2 a.b cancels catastrophically for data far from the
    # origin relative to its spread (points at 1e4 +- 1e-4 ranked almost at random without this).
    t -= t.mean(0)
    sq = (t * t).sum(1)  # (N,)
    block = max(1, min(n, _BLOCK_ELEMENTS // n))
    direct_rows = max(1, min(_DIRECT_ROWS, _BLOCK_ELEMENTS // ((k + 1) * dims)))  # bounds the (rows, k+1, D) diff
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float64)
    with torch.inference_mode():
        for s in range(0, n, block):
            e = min(n, s + block)
            # |b|^2 - 2 a.b ranks a row's neighbours as the squared distance does (|a|^2 is the same along the
            # row), so |a|^2 is added back only for the k + 1 kept
            part = torch.addmm(sq[None, :], t[s:e], t.T, beta=1.0, alpha=-2.0)  # (b, N)
            rows = torch.arange(e - s)
            part[rows, rows + s] = float("inf")  # not its own neighbour
            _, ids = torch.topk(part, k + 1, dim=1, largest=False, sorted=False)  # (b, k + 1)
            del part
            # The expansion above cancels badly for near-duplicates (two equal points come out ~1e-8 apart), so
            # the kept candidates' distances are recomputed directly: exact zeros for duplicates, and ties
            # that really are ties, ordered by index.
            dist = torch.empty(ids.shape, dtype=t.dtype)
            for r in range(0, e - s, direct_rows):
                q = slice(r, min(e - s, r + direct_rows))
                diff = t[ids[q]] - t[s + r:s + q.stop, None, :]  # (rows, k + 1, D)
                dist[q] = diff.square_().sum(2).sqrt_()
            dist[ids == torch.arange(s, e)[:, None]] = float("inf")  # (k = N - 1 keeps the row's own point)
            dist, ids = dist.numpy(), ids.numpy()
            order = np.lexsort((ids, dist), axis=-1)[:, :k]  # by distance, ties by index
            indices[s:e] = np.take_along_axis(ids, order, axis=1)
            distances[s:e] = np.take_along_axis(dist, order, axis=1)
    return indices, distances


# openTSNE (like FIt-SNE) builds 50 trees: ~0.99 of the true 90 neighbours of 70k PCA-50 vectors found, 19 s of
# queries here; 20 trees found 0.95 and 10 trees 0.87. t-SNE weights the nearest few of the 90 most, and the
# maps did not change measurably: on all 70k Fashion-MNIST dense_2 vectors, 50 / 25 / 15 trees gave 10-NN
# accuracy 0.876 / 0.877 / 0.877 and trustworthiness 0.991 / 0.991 / 0.991, the whole t-SNE 52.6 / 43.7 / 37.5 s.
ANNOY_TREES = 15


def approximate_neighbors(x: np.ndarray, k: int, seed: int, n_jobs: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Annoy k-NN as openTSNE computes it (same index and seed handling, ANNOY_TREES trees); None when
    openTSNE's bundled Annoy is not importable (then the caller lets openTSNE search itself)."""
    try:
        from openTSNE.dependencies.annoy import AnnoyIndex
    except ImportError:
        return None
    from concurrent.futures import ThreadPoolExecutor

    x = np.ascontiguousarray(x, dtype=np.float64)
    n, dims = x.shape
    _check_k(n, k)
    index = AnnoyIndex(dims, "euclidean")
    index.set_seed(int(np.random.RandomState(seed).randint(np.iinfo(np.int32).max)))  # as openTSNE seeds it
    for i in range(n):
        index.add_item(i, x[i])
    index.build(ANNOY_TREES, n_jobs=n_jobs)
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float64)

    def query(rows: range) -> None:
        for i in rows:
            ids, dist = index.get_nns_by_item(i, k + 1, include_distances=True)
            if ids[0] == i:  # the point itself comes first, except among exact duplicates
                ids, dist = ids[1:], dist[1:]
            else:
                keep = [j for j, v in enumerate(ids) if v != i][:k]
                ids, dist = [ids[j] for j in keep], [dist[j] for j in keep]
            indices[i], distances[i] = ids[:k], dist[:k]

    workers = max(1, min(n_jobs, n))
    bounds = np.linspace(0, n, workers + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(query, [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))
    return indices, distances
