"""Exact k nearest neighbours by blocked matrix products (torch), for t-SNE's affinities.

Why: openTSNE's default for more than ~1,000 points is an approximate Annoy index queried point by point
through joblib; on 10,000 PCA-50 vectors that took ~3 s here, most of it in joblib's scheduling. The exact
answer is one (N, D) x (D, N) product in row blocks plus a top-k per block: ~0.3 s for 10,000 points, and no
approximation. Above EXACT_MAX_N points the N^2 work outgrows the index, and openTSNE's own search is used.
"""

from __future__ import annotations

import numpy as np

EXACT_MAX_N = 30_000
_BLOCK_ELEMENTS = 32 * 1024 * 1024  # distance entries per block (float64: 256 MiB at most)
_DIRECT_ROWS = 1024                  # rows per direct recomputation: 1024 x (k + 1) x D differences at a time


def exact_neighbors(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (N, k) int64, distances (N, k) float64), nearest first, each point's own row excluded.

    Candidates come from |b|^2 - 2 a.b in float64 (one matrix product per row block); the kept distances
    are then computed directly, |a - b|, so duplicates are exactly 0 apart. Equal distances are ordered by
    index, so the result does not depend on the thread count or the block size.
    """
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))  # (N, D)
    n = t.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} points, got {k}")
    sq = (t * t).sum(1)  # (N,)
    block = max(1, min(n, _BLOCK_ELEMENTS // n))
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
            for r in range(0, e - s, _DIRECT_ROWS):
                q = slice(r, min(e - s, r + _DIRECT_ROWS))
                diff = t[ids[q]] - t[s + r:s + q.stop, None, :]  # (rows, k + 1, D)
                dist[q] = diff.square_().sum(2).sqrt_()
            dist[ids == torch.arange(s, e)[:, None]] = float("inf")  # (k = N - 1 keeps the row's own point)
            dist, ids = dist.numpy(), ids.numpy()
            order = np.lexsort((ids, dist), axis=-1)[:, :k]  # by distance, ties by index
            indices[s:e] = np.take_along_axis(ids, order, axis=1)
            distances[s:e] = np.take_along_axis(dist, order, axis=1)
    return indices, distances
