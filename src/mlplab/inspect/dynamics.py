"""Aligned 2-D maps of one layer across training epochs, with their alignment and quality measured.

Consecutive epochs must be comparable, so no map starts from scratch except the first:
- t-SNE: epoch e's optimisation starts from epoch e-1's map, with the affinities of epoch e's features.
  Warm-started maps start near their answer, so they run WARM_PHASES (a short exaggerated phase, then plain
  iterations) instead of a full schedule. Up to tsne.EXACT_MAX_N points every map is exact t-SNE
  (inspect/tsne.py: exact neighbours and gradients, openTSNE's optimiser); above it, or without the compiled
  kernel, openTSNE's TSNEEmbedding with FFT gradients.
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
# layout. With openTSNE's FFT gradients, on 2,000 points of a 128-unit layer, 60 plain iterations lagged
# independent maps by 0.03 in trustworthiness after 7 epochs; 40 at exaggeration 4 then 60 plain stayed within
# 0.01 (10-NN accuracy within 0.012) with a Procrustes disparity between epochs of at most 0.05 (independent
# maps: 0.08 to 0.6). With exact gradients, on benchmarks/dynamics.py's run (21 snapshots of 2,000 points of
# 256- and 128-unit layers), against independent openTSNE maps: 40@4 + 60@1 averaged -0.002 / -0.002 in 10-NN
# accuracy (worst epoch -0.017) and -0.001 / -0.004 in trustworthiness, with mean disparities 0.006 / 0.024
# (independent: 0.08 / 0.14); 30@4 + 50@1 fell to -0.006 and -0.005 on the second layer, 15@4 + 15@1 to
# -0.025 and -0.016; 40@4 + 100@1 gained ~0.002 for 40% more time.
WARM_PHASES = ((40, 4.0), (60, 1.0))
WARM_PHASES_FFT = ((40, 4.0), (60, 1.0))
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


def aligned_tsne(features: list[np.ndarray], seed: int = 0, *, warm_phases=None, perplexity: float = PERPLEXITY,
                 n_jobs: int | None = None, gradient: str = "auto", on_map=None) -> tuple[np.ndarray, dict]:
    """(E, N, 2) t-SNE maps, each epoch started from the previous one's map.

    gradient: "exact" (inspect/tsne.py), "fft" (openTSNE), or "auto": exact when its kernel is built and
    N <= tsne.EXACT_MAX_N, else fft. on_map(e, coords, geometry) is called as each epoch's map is done, with
    that epoch's _Geometry (exact path: the distances its affinities came from, for the scores) or None."""
    from mlplab.inspect import tsne

    n = len(features[0])
    if n < 4:
        raise MlplabError(f"t-SNE needs at least 4 points, got {n}")
    if gradient not in ("auto", "exact", "fft"):
        raise MlplabError(f"unknown t-SNE gradient {gradient!r}; choose one of: auto, exact, fft")
    if gradient == "auto":
        gradient = "exact" if tsne.available(n) else "fft"
    elif gradient == "exact" and not tsne.available():
        raise MlplabError(f"exact t-SNE is unavailable here: {tsne.status()}")
    perplexity = min(perplexity, (n - 1) / 3)
    if gradient == "exact":
        return _aligned_exact(features, seed, WARM_PHASES if warm_phases is None else warm_phases, perplexity,
                              on_map)
    coords, params = _aligned_opentsne(features, seed, WARM_PHASES_FFT if warm_phases is None else warm_phases,
                                       perplexity, _n_jobs(n_jobs))
    for e, c in enumerate(coords):
        if on_map is not None:
            on_map(e, c, None)
    return coords, params


class _Geometry:
    """One epoch's features seen from every point: squared distances (N, N; +inf on the diagonal) and each point's
    k nearest (sorted), computed once for the map's affinities and for its scores."""

    def __init__(self, features, k: int):
        import torch

        from mlplab.inspect.tsne import sq_distances

        self.d2 = sq_distances(features)
        near = torch.topk(self.d2, min(k, len(self.d2) - 1), dim=1, largest=False)
        self.near_d2, self.near_idx = near.values, near.indices  # (N, k) each, nearest first

    def knn_accuracy(self, labels, k: int = 10) -> float:
        return _knn_votes(self.near_idx[:, :k], labels)


def _aligned_exact(features, seed, warm_phases, perplexity, on_map=None) -> tuple[np.ndarray, dict]:
    from mlplab.inspect import tsne

    n = len(features[0])
    k = max(tsne.neighbour_count(n, perplexity), SCORE_NEIGHBOURS)
    out = np.zeros((len(features), n, 2), dtype=np.float32)
    prev = None
    ee, first = next((e, i) for limit, e, i in TSNE_SCHEDULE if limit is None or n <= limit)
    for e, feats in enumerate(features):
        x = _prepare(feats, seed, pca_dims=10**9)  # no PCA first: neighbours in all the layer's units
        geometry = _Geometry(feats if x is None else x, k)
        if x is None:  # a dead layer: every point at the centre, and the next epoch starts afresh
            prev = None
        else:
            kp = tsne.neighbour_count(n, perplexity)
            p = tsne.affinities(geometry.near_d2[:, :kp].numpy(), geometry.near_idx[:, :kp].numpy(), perplexity)
            if prev is None:  # the first map (or the first after a dead epoch): from scratch, as mlplab embed's
                prev = tsne.fresh_map(x, p, seed, early_iter=ee, n_iter=first)
            else:
                state = None
                for n_iter, exaggeration in warm_phases:
                    prev, state = tsne.optimize(prev, p, int(n_iter), exaggeration=float(exaggeration),
                                                momentum=0.8, state=state)
            out[e] = prev
        if on_map is not None:
            on_map(e, out[e], geometry)
    return out, {"perplexity": float(perplexity), "gradient": "exact",
                 "first": f"exact t-SNE, PCA init, {ee}+{first} iterations",
                 "warm_phases": [[int(i), float(x)] for i, x in warm_phases], "n_jobs": 1}


def _aligned_opentsne(features, seed, warm_phases, perplexity, jobs) -> tuple[np.ndarray, dict]:
    from openTSNE import TSNEEmbedding

    from mlplab.inspect.embed import embed

    n = len(features[0])
    opt = {"negative_gradient_method": "fft", "n_jobs": jobs, **FFT_GRID}
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
    params = {"perplexity": float(perplexity), "gradient": "fft", "first": "as mlplab embed (openTSNE, PCA init, "
              f"{next(ee for limit, ee, i in TSNE_SCHEDULE if limit is None or n <= limit)}+{first} iterations)",
              "warm_phases": [[int(i), float(x)] for i, x in warm_phases], "n_jobs": jobs}
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
    """(E, N, 2) UMAP maps through umap-learn's AlignedUMAP, every point related to itself in the next epoch.

    An epoch whose layer is dead (every point alike) has nothing to map: it enters the fit as a little seeded
    noise, so the other epochs keep their alignment, and comes out at the centre (as t-SNE's dead epochs do).
    Points that AlignedUMAP leaves unplaced (NaN: no edge in their epoch's neighbour graph) are put at that
    map's centre; params["unplaced"] counts them."""
    import warnings

    try:
        from umap import AlignedUMAP
    except ImportError:
        raise MlplabError("UMAP needs the optional extra: pip install 'mlplab[umap]'") from None
    n = len(features[0])
    n_neighbors = int(min(n_neighbors, n - 1))
    if n_neighbors < 2:
        raise MlplabError(f"UMAP needs at least 3 points, got {n}")
    xs = [_prepare(f, seed, pca_dims=10**9) for f in features]
    dead = [e for e, x in enumerate(xs) if x is None]
    noise = np.random.default_rng(seed).normal(size=(n, 2))
    xs = [noise if x is None else x for x in xs]
    params = {"n_neighbors": n_neighbors, "min_dist": float(min_dist)}
    with warnings.catch_warnings():
        # umap-learn warns that a fixed random_state makes it single-threaded, once per epoch: the price of
        # reproducible maps, and not the user's concern
        warnings.filterwarnings("ignore", message=".*overridden to 1 by setting random_state.*")
        if len(xs) == 1:  # AlignedUMAP needs two or more
            from mlplab.inspect.embed import _umap

            coords = np.asarray(_umap(xs[0], seed, n_neighbors, min_dist)[0], dtype=np.float32)[None]
        else:
            relations = [{i: i for i in range(n)} for _ in range(len(xs) - 1)]
            model = AlignedUMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed)
            model.fit(xs, relations=relations)
            coords = np.stack([np.asarray(e, dtype=np.float32) for e in model.embeddings_])
    unplaced = ~np.isfinite(coords).all(axis=2)  # (E, N)
    for e in range(len(coords)):
        if unplaced[e].all() or e in dead:
            coords[e] = 0.0
        elif unplaced[e].any():
            coords[e, unplaced[e]] = coords[e, ~unplaced[e]].mean(axis=0)
    params["unplaced"] = int(unplaced.sum())
    return coords, params


ALIGNERS = {"tsne": aligned_tsne, "umap": aligned_umap, "pca": aligned_pca}


def procrustes_disparity(a: np.ndarray, b: np.ndarray) -> float:
    """scipy.spatial.procrustes's disparity (the sum of squared differences after the best shift, scale and
    rotation of both standardised maps; tests check the two agree), in closed form: 1 - (the sum of the
    singular values of A^T B)^2 for the centred, unit-norm maps A and B. scipy.spatial alone took ~0.3 s to
    import. NaN when either map is a single point."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not np.ptp(a, axis=0).any() or not np.ptp(b, axis=0).any():
        return float("nan")
    a = a - a.mean(0)
    b = b - b.mean(0)
    a /= np.linalg.norm(a)
    b /= np.linalg.norm(b)
    return float(max(0.0, 1.0 - np.linalg.svd(a.T @ b, compute_uv=False).sum() ** 2))


def consecutive_disparity(coords: np.ndarray) -> np.ndarray:
    return np.array([np.nan] + [procrustes_disparity(coords[e - 1], coords[e]) for e in range(1, len(coords))])


SCORE_NEIGHBOURS = 40  # neighbours kept per point for the scores (10-NN accuracy, and 4 x 10 for _trust)


def _knn_votes(idx, labels) -> float:
    """Leave-one-out accuracy of the majority vote of each row's neighbours idx (N, k), ties to the lowest class."""
    import torch

    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    votes = torch.zeros(len(labels), int(labels.max()) + 1, dtype=torch.int64)
    votes.scatter_add_(1, labels[idx], torch.ones_like(idx))
    return float((votes.argmax(1) == labels).double().mean())


def _map_neighbours(coords, k: int):
    import torch

    from mlplab.inspect.tsne import sq_distances

    return torch.topk(sq_distances(coords), k, dim=1, largest=False).indices  # (N, k), nearest first


def knn_accuracy_loo(x: np.ndarray, labels, k: int = 10) -> float:
    """Leave-one-out k-NN accuracy (majority of the k nearest other points, ties to the lowest class).

    Used for every epoch of every layer (and for the maps), so it is one distance matrix and one top-k instead
    of scikit-learn's 5-fold cross-validation (0.3 s per call here); the scores of aligned and independent maps
    are compared with this same function.
    """
    return _knn_votes(_map_neighbours(x, min(k, len(x) - 1)), labels)


def _trust(map_idx, geometry: _Geometry, k: int) -> float:
    """Trustworthiness from each point's k map neighbours map_idx (N, k) and the features' geometry. A map
    neighbour's rank is 1 + the number of points nearer to it in the features; only ranks above k count. With
    the compiled kernel each rank is counted on its row of distances (inspect/tsne.c); without it, ranks
    within the nearest 4k are read off the geometry's sorted list and the rest counted on their rows."""
    import torch

    from mlplab.inspect.tsne import rank_count

    dx = geometry.d2
    n = dx.shape[0]
    ranks = rank_count(dx, map_idx)
    if ranks is None:
        dj = torch.gather(dx, 1, map_idx)                          # (N, k): feature distance to each map neighbour
        near = geometry.near_d2[:, :min(n - 1, 4 * k)]             # sorted
        ranks = (near[:, None, :] < dj[:, :, None]).sum(2) + 1    # exact where dj <= the last near distance
        far = (dj > near[:, -1:]).nonzero()                        # (m, 2): (row, which neighbour)
        for s in range(0, len(far), 4096):  # (4096, N) comparisons at a time
            rows, cols = far[s:s + 4096, 0], far[s:s + 4096, 1]
            ranks[rows, cols] = (dx[rows] < dj[rows, cols][:, None]).sum(1) + 1
    penalty = (ranks - k).clamp_min(0).sum().item()
    return float(1.0 - 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)) * penalty)


def trustworthiness_fast(coords: np.ndarray, features: np.ndarray, k: int = 10) -> float:
    """Trustworthiness (Venna and Kaski), as sklearn.manifold.trustworthiness, from the ranks of each map
    neighbour in the feature space: one distance matrix per space instead of a full argsort."""
    n = len(coords)
    k = min(k, (n - 1) // 2)
    if k < 1:
        return float("nan")
    return _trust(_map_neighbours(coords, k), _Geometry(features, 4 * k), k)


def score_map(coords: np.ndarray, features: np.ndarray, labels, k: int = 10, *,
              geometry: _Geometry | None = None) -> tuple[float, float, float]:
    """(10-NN accuracy in the map, in the features, trustworthiness of the map); geometry: the features'
    distances when they are already computed (the exact t-SNE path hands its own)."""
    n = len(coords)
    k_knn, k_trust = min(k, n - 1), min(k, (n - 1) // 2)
    geometry = geometry or _Geometry(features, max(k_knn, 4 * k_trust))
    map_idx = _map_neighbours(coords, max(k_knn, k_trust))
    trust = _trust(map_idx[:, :k_trust], geometry, k_trust) if k_trust >= 1 else float("nan")
    return _knn_votes(map_idx[:, :k_knn], labels), geometry.knn_accuracy(labels, k_knn), trust


def layer_dynamics(layer: str, features: list[np.ndarray], labels, *, method: str = "tsne", seed: int = 0,
                   score: bool = True, **options) -> LayerDynamics:
    """Aligned maps of one layer's per-epoch features (a list of (N, units) arrays) and their scores."""
    fn = ALIGNERS.get(method)
    if fn is None:
        raise MlplabError(f"unknown method {method!r} for dynamics; choose one of: {', '.join(ALIGNERS)}")
    if not features:
        raise MlplabError(f"no snapshots of {layer} to map")
    labels = np.asarray(labels)
    e = len(features)
    knn_map, knn_layer, trust = (np.full(e, np.nan) for _ in range(3))
    scored = set()

    def on_map(i, coords_i, geometry):
        # scored as each map is done, on the distances its affinities came from (then freed)
        if geometry is not None and np.isfinite(coords_i).all():
            knn_map[i], knn_layer[i], trust[i] = score_map(coords_i, features[i], labels, geometry=geometry)
            scored.add(i)

    if score and method == "tsne":
        options = {**options, "on_map": on_map}
    start = time.perf_counter()
    coords, params = fn([np.asarray(f, dtype=np.float32) for f in features], seed, **options)
    seconds = time.perf_counter() - start
    if not np.isfinite(coords).all():
        raise MlplabError(f"{method} produced non-finite coordinates for {layer}; try --method pca")
    if score:
        for i, feats in enumerate(features):
            if i not in scored:
                knn_map[i], knn_layer[i], trust[i] = score_map(coords[i], feats, labels)
    log.info("%s dynamics of %s: %d epochs x %d points in %.2f s (with the scores)", method, layer, e, len(labels),
             seconds)
    return LayerDynamics(layer, coords.astype(np.float32), consecutive_disparity(coords), knn_map, knn_layer,
                         trust, seconds, params)
