"""Aligned 2-D maps of one layer across training epochs, with their alignment and quality measured.

Consecutive epochs must be comparable, so no map starts from scratch except the first:
- t-SNE: epoch e's optimisation starts from epoch e-1's map (openTSNE TSNEEmbedding), with the affinities
  of epoch e's features. Warm-started maps start near their answer, so they skip early exaggeration and run
  WARM_ITER iterations instead of a full schedule.
- UMAP: umap-learn's AlignedUMAP, with every point related to itself in the next epoch.
- PCA: each epoch's own principal axes, with each axis' sign chosen to agree with the previous epoch's map.
Alignment is the Procrustes disparity between consecutive maps (0 = same shape up to rotation, scale and
shift); quality is the leave-one-out 10-NN accuracy in the map and in the layer, and trustworthiness.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from mlplab.errors import MlplabError
from mlplab.inspect.embed import FFT_GRID, TSNE_SCHEDULE, _n_jobs
from mlplab.inspect.neighbors import EXACT_MAX_N, approximate_neighbors, exact_neighbors

log = logging.getLogger(__name__)

ALIGNED_METHODS = ("tsne", "umap", "pca")
# Warm-started epochs: (iterations, exaggeration) phases from the previous epoch's map, 100 iterations in all
# instead of the 250 of a fresh map. Without the exaggerated phase the map stays stuck in the previous epoch's
# layout: on 2,000 points of a 128-unit layer, 60 plain iterations lagged independent maps by 0.03 in
# trustworthiness after 7 epochs; 40 at exaggeration 4 then 60 plain stayed within 0.01 (10-NN accuracy within
# 0.012) with a Procrustes disparity between epochs of at most 0.05 (independent maps: 0.08 to 0.6).
WARM_PHASES = ((40, 4.0), (60, 1.0))
# FFT gradients for the warm phases: the map is already spread out, where Barnes-Hut slows down (0.51 s vs
# 0.33 s per warm map of 2,000 points on one core).
WARM_GRADIENT = "fft"
PERPLEXITY = 30.0


@dataclass
class LayerDynamics:
    layer: str
    coords: np.ndarray                       # float32 (E, N, 2)
    disparity: np.ndarray                    # float64 (E,): Procrustes disparity to the previous epoch (NaN at 0)
    knn_map: np.ndarray                      # float64 (E,): 10-NN accuracy in the map
    knn_layer: np.ndarray                    # float64 (E,): 10-NN accuracy in the layer's own features
    trust: np.ndarray                        # float64 (E,): trustworthiness of the map
    seconds: float = 0.0
    params: dict = field(default_factory=dict)


def _prepare(x: np.ndarray, seed: int, pca_dims: int = 50) -> np.ndarray | None:
    """Features -> float64 for neighbours; None for a constant layer (nothing to map)."""
    x = np.asarray(x, dtype=np.float32)
    if not np.ptp(x, axis=0).any():
        return None
    # the same power-of-two rescale as inspect.embed: huge activations must not overflow in float32 libraries
    x = np.ldexp(x, -int(np.floor(np.log2(float(np.abs(x).max())))))
    if x.shape[1] > pca_dims and len(x) > pca_dims:
        from sklearn.decomposition import PCA

        x = PCA(n_components=pca_dims, svd_solver="randomized", random_state=seed).fit_transform(x)
    return np.ascontiguousarray(x, dtype=np.float64)


def _affinities(x: np.ndarray, perplexity: float, seed: int, jobs: int):
    from openTSNE.affinity import MultiscaleMixture
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    n = len(x)
    k = min(n - 1, int(3 * perplexity))
    found = exact_neighbors(x, k) if n <= EXACT_MAX_N else approximate_neighbors(x, k, seed, jobs)
    if found is None:
        from openTSNE.affinity import PerplexityBasedNN

        return PerplexityBasedNN(x, perplexity=perplexity, n_jobs=jobs, random_state=seed, verbose=False)
    return MultiscaleMixture(None, perplexity, knn_index=PrecomputedNeighbors(*found), n_jobs=jobs,
                             random_state=seed)


def aligned_tsne(features: list[np.ndarray], seed: int = 0, *, warm_phases=WARM_PHASES,
                 perplexity: float = PERPLEXITY, n_jobs: int | None = None) -> tuple[np.ndarray, dict]:
    """(E, N, 2) t-SNE maps, each epoch started from the previous one's map."""
    from openTSNE import TSNEEmbedding

    from mlplab.inspect.embed import embed

    n = len(features[0])
    if n < 4:
        raise MlplabError(f"t-SNE needs at least 4 points, got {n}")
    perplexity = min(perplexity, (n - 1) / 3)
    jobs = _n_jobs(n_jobs)
    opt = {"negative_gradient_method": WARM_GRADIENT, "n_jobs": jobs,
           **(FFT_GRID if WARM_GRADIENT == "fft" else {})}
    out = np.zeros((len(features), n, 2), dtype=np.float32)
    prev = None
    for e, feats in enumerate(features):
        x = _prepare(feats, seed)
        if x is None:  # a dead layer: every point at the centre, and the next epoch starts afresh
            prev = None
            continue
        if prev is None:
            # the first map (or the first after a dead epoch) is exactly what `mlplab embed` would draw
            prev = embed(feats, "tsne", seed, n_jobs=jobs, perplexity=perplexity).coords.astype(np.float64)
            out[e] = prev
            continue
        aff = _affinities(x, perplexity, seed, jobs)
        emb = TSNEEmbedding(prev.copy(), aff, random_state=seed, verbose=False, **opt)
        for n_iter, exaggeration in warm_phases:
            # openTSNE's "auto" learning rate is N / exaggeration (Belkina et al. 2019)
            emb = emb.optimize(int(n_iter), exaggeration=float(exaggeration), momentum=0.8, learning_rate="auto")
        prev = np.asarray(emb, dtype=np.float64)
        out[e] = prev
    first = next((i for limit, ee, i in TSNE_SCHEDULE if limit is None or n <= limit), 0)
    params = {"perplexity": float(perplexity), "first": "as mlplab embed (openTSNE, PCA init, "
              f"{next(ee for limit, ee, i in TSNE_SCHEDULE if limit is None or n <= limit)}+{first} iterations)",
              "warm_phases": [[int(i), float(x)] for i, x in warm_phases], "warm_gradient": WARM_GRADIENT,
              "n_jobs": jobs}
    return out, params


def aligned_pca(features: list[np.ndarray], seed: int = 0) -> tuple[np.ndarray, dict]:
    """(E, N, 2) PCA maps; each axis' sign agrees with the previous epoch's (the first: largest |value| > 0)."""
    from mlplab.inspect.embed import _pca

    out = np.zeros((len(features), len(features[0]), 2), dtype=np.float32)
    prev = None
    for e, feats in enumerate(features):
        x = np.asarray(feats, dtype=np.float64)
        if not np.ptp(x, axis=0).any():
            prev = None
            continue
        coords = np.asarray(_pca(x, seed)[0], dtype=np.float64)
        if prev is None:
            signs = np.sign(coords[np.abs(coords).argmax(axis=0), np.arange(2)])
        else:
            signs = np.sign((coords * prev).sum(axis=0))
        coords = coords * np.where(signs == 0, 1, signs)
        out[e] = prev = coords
    return out, {}


def aligned_umap(features: list[np.ndarray], seed: int = 0, *, n_neighbors: int = 15,
                 min_dist: float = 0.1) -> tuple[np.ndarray, dict]:
    try:
        from umap import AlignedUMAP
    except ImportError:
        raise MlplabError("UMAP needs the optional extra: pip install 'mlplab[umap]'") from None
    n = len(features[0])
    n_neighbors = int(min(n_neighbors, n - 1))
    if n_neighbors < 2:
        raise MlplabError(f"UMAP needs at least 3 points, got {n}")
    xs = [_prepare(f, seed, pca_dims=10**9) for f in features]
    xs = [np.zeros((n, 1)) if x is None else x for x in xs]
    if len(xs) == 1:  # AlignedUMAP needs two or more
        from mlplab.inspect.embed import _umap

        return np.asarray(_umap(xs[0], seed, n_neighbors, min_dist)[0], dtype=np.float32)[None], {}
    relations = [{i: i for i in range(n)} for _ in range(len(xs) - 1)]
    # a fixed random_state makes umap-learn single-threaded: the price of reproducible maps
    model = AlignedUMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed, n_jobs=1)
    model.fit(xs, relations=relations)
    return np.stack([np.asarray(e, dtype=np.float32) for e in model.embeddings_]), {
        "n_neighbors": n_neighbors, "min_dist": float(min_dist)}


ALIGNERS = {"tsne": aligned_tsne, "umap": aligned_umap, "pca": aligned_pca}


def procrustes_disparity(a: np.ndarray, b: np.ndarray) -> float:
    """scipy's Procrustes disparity (sum of squared differences after the best shift, scale and rotation of
    both standardised maps); NaN when either map is a single point."""
    from scipy.spatial import procrustes

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not np.ptp(a, axis=0).any() or not np.ptp(b, axis=0).any():
        return float("nan")
    return float(procrustes(a, b)[2])


def consecutive_disparity(coords: np.ndarray) -> np.ndarray:
    return np.array([np.nan] + [procrustes_disparity(coords[e - 1], coords[e]) for e in range(1, len(coords))])


def _neighbours(x: np.ndarray, k: int):
    """(indices (N, k) of each row's k nearest other rows, full distance matrix (N, N)) in float32 torch."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    t = t - t.mean(0)
    d = torch.cdist(t, t)  # (N, N)
    d.fill_diagonal_(float("inf"))
    return torch.topk(d, k, dim=1, largest=False).indices, d


def knn_accuracy_loo(x: np.ndarray, labels, k: int = 10) -> float:
    """Leave-one-out k-NN accuracy (majority of the k nearest other points, ties to the lowest class).

    Used for every epoch of every layer (and for the maps), so it is one distance matrix and one top-k instead
    of scikit-learn's 5-fold cross-validation (0.3 s per call here); the scores of aligned and independent maps
    are compared with this same function.
    """
    import torch

    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    n = len(labels)
    k = min(k, n - 1)
    idx, _ = _neighbours(x, k)
    votes = torch.zeros(n, int(labels.max()) + 1, dtype=torch.int64)
    votes.scatter_add_(1, labels[idx], torch.ones_like(idx))
    return float((votes.argmax(1) == labels).double().mean())


def trustworthiness_fast(coords: np.ndarray, features: np.ndarray, k: int = 10) -> float:
    """Trustworthiness (Venna and Kaski), as sklearn.manifold.trustworthiness, from the ranks of each map
    neighbour in the feature space: one distance matrix per space instead of a full argsort."""
    import torch

    n = len(coords)
    k = min(k, (n - 1) // 2)
    if k < 1:
        return float("nan")
    map_idx, _ = _neighbours(coords, k)                       # (N, k)
    _, dx = _neighbours(features, 1)                          # (N, N), inf on the diagonal
    dj = torch.gather(dx, 1, map_idx)                         # (N, k): feature distance to each map neighbour
    ranks = torch.zeros(map_idx.shape, dtype=torch.int64)     # 1-based rank among the other points
    for s in range(0, n, 256):  # (256, k, N) comparisons at a time
        ranks[s:s + 256] = (dx[s:s + 256, None, :] < dj[s:s + 256, :, None]).sum(2) + 1
    penalty = (ranks - k).clamp_min(0).sum().item()
    return float(1.0 - 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)) * penalty)


def score_map(coords: np.ndarray, features: np.ndarray, labels) -> tuple[float, float, float]:
    """(10-NN accuracy in the map, in the features, trustworthiness of the map)."""
    feats = np.asarray(features, dtype=np.float32)
    return (knn_accuracy_loo(coords, labels), knn_accuracy_loo(feats, labels),
            trustworthiness_fast(coords, feats))


def layer_dynamics(layer: str, features: list[np.ndarray], labels, *, method: str = "tsne", seed: int = 0,
                   score: bool = True, **options) -> LayerDynamics:
    """Aligned maps of one layer's per-epoch features (a list of (N, units) arrays) and their scores."""
    fn = ALIGNERS.get(method)
    if fn is None:
        raise MlplabError(f"unknown method {method!r} for dynamics; choose one of: {', '.join(ALIGNERS)}")
    if not features:
        raise MlplabError(f"no snapshots of {layer} to map")
    start = time.perf_counter()
    coords, params = fn([np.asarray(f, dtype=np.float32) for f in features], seed, **options)
    seconds = time.perf_counter() - start
    if not np.isfinite(coords).all():
        raise MlplabError(f"{method} produced non-finite coordinates for {layer}; try --method pca")
    labels = np.asarray(labels)
    e = len(features)
    knn_map, knn_layer, trust = (np.full(e, np.nan) for _ in range(3))
    if score:
        for i, feats in enumerate(features):
            knn_map[i], knn_layer[i], trust[i] = score_map(coords[i], feats, labels)
    log.info("%s dynamics of %s: %d epochs x %d points in %.2f s", method, layer, e, len(labels), seconds)
    return LayerDynamics(layer, coords.astype(np.float32), consecutive_disparity(coords), knn_map, knn_layer,
                         trust, seconds, params)
