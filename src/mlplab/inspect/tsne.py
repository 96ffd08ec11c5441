"""Exact t-SNE for a few thousand points: what `mlplab dynamics` optimises once per snapshot and layer.

Affinities come from exact neighbours (one PyTorch distance matrix, which the map's scores reuse) and a
per-point perplexity search; gradients are exact (every pair, no tree or grid) in C (inspect/tsne.c, built
and cached on first use as model/kernels.c is); the optimiser is openTSNE's gradient descent (gains, momentum,
learning rate N / exaggeration, step clipping). Up to EXACT_MAX_N points this is faster than openTSNE's
approximations (timings in tsne.c and docs/INTERNALS.md); above it, or without a C compiler (or with
MLPLAB_KERNELS=0), available() is False and inspect/dynamics.py uses openTSNE.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

VERSION = 1  # tsne.c's mlplab_tsne_version()
SOURCE = Path(__file__).with_name("tsne.c")
# Exact gradients cost N^2 per iteration: ~1 ms at 2,000 points here, ~6 ms at 5,000, where openTSNE's FFT
# gradient costs ~10-15 ms; beyond ~8,000 points FFT wins.
EXACT_MAX_N = 5000
EARLY_EXAGGERATION = 12.0
MAX_STEP_NORM = 5.0    # openTSNE's default: no point moves more than this per iteration
MIN_GAIN = 0.01
PERPLEXITY_TOL = 1e-5  # entropy, in nats
PERPLEXITY_MAX_ITER = 100

_lock = threading.Lock()
_lib = None
_status: str | None = None


def _open():
    """(library or None, status line)."""
    from mlplab.model.kernels import KernelsUnavailable, compile_library

    try:
        lib, where = compile_library(SOURCE, "libmlplab_tsne.so")
    except KernelsUnavailable as exc:
        return None, f"openTSNE (no exact t-SNE kernel: {exc})"
    lib.mlplab_tsne_version.restype = ctypes.c_int
    if lib.mlplab_tsne_version() != VERSION:
        return None, f"openTSNE (stale t-SNE library {where})"
    p, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    lib.mlplab_tsne_optimize.argtypes = (p, p, p, i64, p, p, p, i64, f64, f64, f64, f64, f64)
    lib.mlplab_tsne_optimize.restype = i64
    lib.mlplab_tsne_gradient.argtypes = (p, i64, p, p, p, f64, p)
    lib.mlplab_tsne_gradient.restype = i64
    lib.mlplab_tsne_perplexity.argtypes = (p, i64, i64, f64, f64, i64, p)
    lib.mlplab_tsne_perplexity.restype = i64
    lib.mlplab_rank_count.argtypes = (p, i64, p, i64, p)
    lib.mlplab_rank_count.restype = None
    return lib, f"exact C kernel ({where})"


def _load():
    """The loaded library (built on first use), or None; the reason is in status()."""
    global _lib, _status
    if _status is None:
        with _lock:
            if _status is None:
                try:
                    lib, status_line = _open()
                except Exception as exc:  # a broken build must never stop mapping: openTSNE still works
                    lib, status_line = None, f"openTSNE (t-SNE kernel failed: {type(exc).__name__}: {exc})"
                log.info("t-SNE for dynamics: %s", status_line)
                _lib, _status = lib, status_line
    return _lib


def available(n: int | None = None) -> bool:
    """Whether the exact kernel is loaded (built on first use) and n points are few enough for it."""
    return _load() is not None and (n is None or n <= EXACT_MAX_N)


def status() -> str:
    _load()
    return _status or ""


def _reset() -> None:
    """Forget the loaded state (tests switch MLPLAB_KERNELS)."""
    global _lib, _status
    with _lock:
        _lib, _status = None, None


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def sq_distances(x) -> "torch.Tensor":  # noqa: F821
    """(N, N) float32 squared Euclidean distances between the rows of x, +inf on the diagonal (a point is not its
    own neighbour), up to one power-of-two factor. The rows are centred first, so |a|^2 + |b|^2 - 2ab keeps its
    precision; squared because t-SNE's kernel wants them squared and every ranking (neighbours,
    trustworthiness) is the same. The affinities do not depend on the factor (each row's width is searched)."""
    import torch

    t = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    t = t - t.mean(0)
    top = float(t.abs().max()) if t.numel() else 0.0
    if 0.0 < top < float("inf"):  # a power-of-two rescale (exact): squares of huge activations must not overflow
        t = t * float(2.0 ** -np.floor(np.log2(top)))
    sq = (t * t).sum(1)
    d = torch.addmm(sq[None, :], t, t.T, alpha=-2.0).add_(sq[:, None]).clamp_min_(0.0)  # (N, N)
    d.fill_diagonal_(float("inf"))
    return d


def neighbour_count(n: int, perplexity: float) -> int:
    """How many neighbours t-SNE's affinities use: 3 x perplexity (perplexity capped at (N - 1) / 3)."""
    return min(n - 1, int(3 * min(perplexity, (n - 1) / 3)))


@dataclass
class Affinities:
    """The joint affinity matrix P in CSR form (float64, summing to 1), as tsne.c reads it."""

    indptr: np.ndarray   # int64 (N + 1,)
    indices: np.ndarray  # int64 (nnz,)
    data: np.ndarray     # float64 (nnz,)
    perplexity: float
    unconverged: int = 0

    @property
    def n(self) -> int:
        return len(self.indptr) - 1


def affinities(d2_near, idx_near, perplexity: float = 30.0) -> Affinities:
    """t-SNE's affinities from each point's nearest neighbours: squared distances d2_near and indices idx_near
    (N, k), k = neighbour_count(N, perplexity). Each row is weighted by a Gaussian whose width gives the
    perplexity, then the matrix is symmetrised ((P + P^T) / 2) and normalised to sum 1, as openTSNE's."""
    from scipy.sparse import csr_matrix

    lib = _load()
    d2 = np.ascontiguousarray(np.asarray(d2_near, dtype=np.float64))
    idx = np.asarray(idx_near, dtype=np.int64)
    n, k = d2.shape
    perplexity = float(min(perplexity, (n - 1) / 3))
    cond = np.empty_like(d2)
    unconverged = int(lib.mlplab_tsne_perplexity(_ptr(d2), n, k, perplexity, PERPLEXITY_TOL, PERPLEXITY_MAX_ITER,
                                                 _ptr(cond)))
    p = csr_matrix((cond.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    p = p + p.T
    p.sum_duplicates()
    p.sort_indices()
    data = np.ascontiguousarray(p.data, dtype=np.float64)
    data /= data.sum()
    return Affinities(np.ascontiguousarray(p.indptr, dtype=np.int64), np.ascontiguousarray(p.indices, dtype=np.int64),
                      data, perplexity, unconverged)


def affinities_of(x, perplexity: float = 30.0) -> Affinities:
    """Affinities of the rows of x (exact neighbours)."""
    import torch

    d2 = sq_distances(x)
    k = neighbour_count(len(d2), perplexity)
    near = torch.topk(d2, k, dim=1, largest=False)
    return affinities(near.values.numpy(), near.indices.numpy(), perplexity)


def rank_count(d2, idx) -> "torch.Tensor | None":  # noqa: F821
    """(N, k) int64: 1 + the number of points nearer to point i than its neighbour idx[i, c], in the distances
    d2 (N, N float32 torch, +inf diagonal); None when the kernel is not loaded."""
    import torch

    lib = _load()
    if lib is None:
        return None
    d2 = d2.contiguous()
    idx = idx.to(torch.int64).contiguous()
    out = torch.empty(idx.shape, dtype=torch.int64)
    lib.mlplab_rank_count(d2.data_ptr(), d2.shape[0], idx.data_ptr(), idx.shape[1], out.data_ptr())
    return out


@dataclass
class Optimizer:
    """openTSNE's gradient-descent state: the last update and the per-coordinate gains, both (N, 2)."""

    update: np.ndarray
    gains: np.ndarray
    iterations: list = field(default_factory=list)

    @classmethod
    def fresh(cls, n: int) -> "Optimizer":
        return cls(np.zeros((n, 2)), np.ones((n, 2)))


def optimize(y: np.ndarray, p: Affinities, n_iter: int, *, exaggeration: float = 1.0, momentum: float = 0.8,
             learning_rate: float | None = None, state: Optimizer | None = None) -> tuple[np.ndarray, Optimizer]:
    """n_iter gradient-descent steps from the map y (N, 2); learning rate N / exaggeration unless given.
    Returns the new map (float64) and the optimiser state to continue with."""
    lib = _load()
    n = p.n
    y = np.array(y, dtype=np.float64, order="C")  # a copy: the caller's map is not changed
    if y.shape != (n, 2):
        raise ValueError(f"map has shape {y.shape}, affinities are for {n} points")
    state = state or Optimizer.fresh(n)
    lr = n / exaggeration if learning_rate is None else learning_rate
    if lib.mlplab_tsne_optimize(_ptr(y), _ptr(state.update), _ptr(state.gains), n, _ptr(p.indptr), _ptr(p.indices),
                                _ptr(p.data), int(n_iter), float(exaggeration), float(momentum), float(lr),
                                MAX_STEP_NORM, MIN_GAIN) != 0:
        raise MemoryError("t-SNE kernel: out of memory")
    state.iterations.append((int(n_iter), float(exaggeration)))
    return y, state


def gradient(y: np.ndarray, p: Affinities, exaggeration: float = 1.0) -> np.ndarray:
    """The gradient the optimiser follows (openTSNE's convention: the KL divergence's gradient / 4), (N, 2)."""
    lib = _load()
    y = np.ascontiguousarray(y, dtype=np.float64)
    out = np.empty_like(y)
    if lib.mlplab_tsne_gradient(_ptr(y), p.n, _ptr(p.indptr), _ptr(p.indices), _ptr(p.data), float(exaggeration),
                                _ptr(out)) != 0:
        raise MemoryError("t-SNE kernel: out of memory")
    return out


def _top2_axes(c: np.ndarray) -> np.ndarray:
    """The two leading eigenvectors (D, 2) of a symmetric positive semi-definite matrix c (D, D), by orthogonal
    iteration and a final 2 x 2 Rayleigh-Ritz rotation. Only small matrix-vector products: a LAPACK
    eigensolver with its own threads took from 3 ms to 1.8 s on the same 256 x 256 matrix on a loaded 2-core
    machine (threads waiting for each other), and an initialisation needs no more than this."""
    d = len(c)
    v = np.zeros((d, 2))
    v[np.argsort(-np.diag(c), kind="stable")[:2], [0, 1]] = 1.0  # start on the two widest coordinates
    for _ in range(1000):
        w = c @ v
        w[:, 0] /= np.linalg.norm(w[:, 0]) or 1.0
        w[:, 1] -= (w[:, 0] @ w[:, 1]) * w[:, 0]
        w[:, 1] /= np.linalg.norm(w[:, 1]) or 1.0
        done = np.abs(np.abs((w * v).sum(0)) - 1.0).max() < 1e-12
        v = w
        if done:
            break
    vals, rot = np.linalg.eigh(v.T @ c @ v)  # 2 x 2
    return v @ rot[:, ::-1]


def pca_init(x, seed: int = 0) -> np.ndarray:
    """openTSNE's PCA initialisation: the first two principal components (signs fixed: each axis' largest
    |value| positive), scaled so the first has standard deviation 1e-4, plus 1% jitter (seeded)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(0)
    if x.shape[1] == 1:
        coords = np.concatenate([x, np.zeros_like(x)], axis=1)
    else:
        coords = x @ _top2_axes(x.T @ x)
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), np.arange(2)])
    coords = coords * np.where(signs == 0, 1, signs)
    std = float(np.std(coords[:, 0])) or 1.0
    coords = coords / std * 1e-4
    coords += np.random.default_rng(seed).normal(0.0, 1e-4 * 0.01, coords.shape)
    return np.ascontiguousarray(coords)


def fresh_map(x, p: Affinities, seed: int = 0, *, early_iter: int = 125, n_iter: int = 125) -> np.ndarray:
    """A map from scratch: PCA initialisation, early_iter steps at exaggeration 12 (momentum 0.5), then n_iter
    plain steps (momentum 0.8), as openTSNE's TSNE().fit with mlplab embed's schedule."""
    y, state = optimize(pca_init(x, seed), p, early_iter, exaggeration=EARLY_EXAGGERATION, momentum=0.5)
    y, _ = optimize(y, p, n_iter, exaggeration=1.0, momentum=0.8, state=state)
    return y
