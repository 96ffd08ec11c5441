"""2-D embeddings of feature vectors: t-SNE, UMAP, MDS and PCA, seeded and reproducible.

METHODS is the one registry of embedding methods: each Method record has the name used on the command line and
in file names, the title shown on pictures and reports, a one-line description for help texts, and the function,
called as fn(x, seed, **options) -> (coords, params, note). The CLI, the pictures, the report and experiment
files all read it, so adding a method is one entry here. embed() validates the input once, resolves the name
through the registry and times the call.
"""

from __future__ import annotations

import inspect as pyinspect  # the standard library's; this package is mlplab.inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mlplab.errors import MlplabError
from mlplab.inspect.neighbors import EXACT_MAX_N, approximate_neighbors, exact_neighbors

log = logging.getLogger(__name__)

SMACOF_MAX_N = 2000  # SMACOF is O(N^2) memory and time per iteration; past this, classical MDS

# t-SNE schedule. openTSNE's defaults (250 exaggeration + 500 iterations) are tuned for safety; with the
# "auto" learning rate (N / exaggeration, Belkina et al. 2019) the map is formed far sooner. Measured on
# 10k Fashion-MNIST dense_2 vectors: 125+125 gives the same 10-NN accuracy (0.855 vs 0.855) and
# trustworthiness (0.995 vs 0.995) as 250+500 in a third of the time. Large N needs a longer exaggeration
# phase for clusters to gather: at 70k, 250+125 gave the same 10-NN accuracy (0.877) and trustworthiness
# (0.991) as 300+125.
TSNE_SCHEDULE = ((20_000, 125, 125), (None, 250, 125))  # (max N, exaggeration iterations, optimisation)
# FFT-interpolated gradients cost O(N) plus a fixed grid FFT per iteration (~20 ms here), which dominates for
# small N: measured at N=2,000, Barnes-Hut took 4.1 s and FFT 8.3 s; at 5,000 FFT wins (10.2 s vs 12.5 s).
# With the coarser grid below, FFT is faster from ~1,000 points too (2,500: 2.5 s vs 3.2 s), but Barnes-Hut's
# small maps scored a little higher (10-NN accuracy 0.860 vs 0.853 at 2,500), and they are cheap either way.
BH_MAX_N = 2500
# The FFT gradient's interpolation grid: openTSNE defaults to 3 points per interval and 1 interval per unit of
# the map. 2 and 2 make the grid ~5x smaller; on 10k Fashion-MNIST dense_2 vectors that cut the fit from 8.6 s
# to 3.2 s at the same 10-NN accuracy (0.857 vs 0.857) and trustworthiness (0.994 vs 0.994); at 5,000 points
# 7.1 s -> 3.7 s, 0.845 vs 0.846 (benchmarks/embed.py prints the comparison with scikit-learn and openTSNE).
FFT_GRID = {"n_interpolation_points": 2, "ints_in_interval": 2}


@dataclass
class Embedding:
    coords: np.ndarray            # float32 (N, 2)
    method: str
    params: dict = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""


def _n_jobs(requested=None) -> int:
    if requested:
        return int(requested)
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use, not the whole machine's
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pca(x, seed, n_components=2):
    from sklearn.decomposition import PCA

    n_components = min(n_components, x.shape[1], x.shape[0])
    pca = PCA(n_components=n_components, random_state=seed)
    coords = pca.fit_transform(x)
    if coords.shape[1] < 2:  # one-feature input: pad so every embedding is (N, 2)
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    explained = [round(float(v), 4) for v in pca.explained_variance_ratio_]
    return coords, {"explained_variance_ratio": explained}, f"PCA: {sum(explained):.1%} of the variance in 2-D"


def _tsne(x, seed, perplexity=30.0, pca_dims=50, early_exaggeration_iter=None, n_iter=None, n_jobs=None,
          negative_gradient_method=None):
    from openTSNE import TSNE
    from sklearn.decomposition import PCA

    n = len(x)
    if n < 4:
        raise MlplabError(f"t-SNE needs at least 4 points, got {n}")
    notes = []
    # openTSNE needs 3 * perplexity neighbours per point; shrink it for tiny inputs instead of failing.
    max_perplexity = (n - 1) / 3
    if perplexity > max_perplexity:
        notes.append(f"perplexity lowered from {perplexity:g} to {max_perplexity:.3g} for {n} points")
        perplexity = max_perplexity
    if early_exaggeration_iter is None or n_iter is None:
        ee, it = next((e, i) for limit, e, i in TSNE_SCHEDULE if limit is None or n <= limit)
        early_exaggeration_iter = ee if early_exaggeration_iter is None else early_exaggeration_iter
        n_iter = it if n_iter is None else n_iter
    # PCA to 50 dims first: neighbours in 50-D are as good for t-SNE (the rest is mostly noise) and the
    # nearest-neighbour search, the costliest step after the gradient, gets 10x cheaper on 512-D features.
    reduced = bool(pca_dims) and x.shape[1] > pca_dims and n > pca_dims
    if reduced:
        x = PCA(n_components=pca_dims, svd_solver="randomized", random_state=seed).fit_transform(x)
    gradient = negative_gradient_method or ("bh" if n <= BH_MAX_N else "fft")
    # The thread count changes the floating-point summation order, so coordinates are reproducible for a
    # given (seed, n_jobs); the default uses every core this process may run on.
    jobs = _n_jobs(n_jobs)
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        initialization="pca",  # global structure from PCA; random init scatters clusters arbitrarily
        negative_gradient_method=gradient,  # "fft": interpolation-based, O(N) per iteration
        early_exaggeration_iter=int(early_exaggeration_iter),
        n_iter=int(n_iter),
        n_jobs=jobs,
        random_state=seed,
        verbose=False,
        **(FFT_GRID if gradient == "fft" else {}),
    )
    x = np.ascontiguousarray(x, dtype=np.float64)
    # Neighbours found here (inspect/neighbors.py: exact up to EXACT_MAX_N points, else openTSNE's Annoy index
    # queried without joblib's per-point overhead), then openTSNE's own affinities from them.
    from openTSNE.affinity import MultiscaleMixture
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    k = min(n - 1, int(3 * perplexity))
    found = exact_neighbors(x, k) if n <= EXACT_MAX_N else approximate_neighbors(x, k, seed, jobs)
    neighbors = "exact" if n <= EXACT_MAX_N else ("annoy" if found is not None else "openTSNE auto")
    affinities = None if found is None else MultiscaleMixture(None, perplexity,
                                                              knn_index=PrecomputedNeighbors(*found),
                                                              n_jobs=jobs, random_state=seed)
    coords = np.asarray(tsne.fit(x, affinities=affinities))
    params = {"perplexity": float(perplexity), "pca_dims": int(x.shape[1]) if reduced else None,
              "early_exaggeration_iter": int(early_exaggeration_iter), "n_iter": int(n_iter), "n_jobs": jobs,
              "negative_gradient_method": gradient, "initialization": "pca",
              "neighbors": neighbors,
              **(FFT_GRID if gradient == "fft" else {})}
    head = f"openTSNE ({'FFT' if gradient == 'fft' else 'Barnes-Hut'}), " + (f"PCA-{x.shape[1]}, " if reduced else "")
    note = "; ".join([f"{head}{early_exaggeration_iter}+{n_iter} iterations"] + notes)
    return coords, params, note


def _umap(x, seed, n_neighbors=15, min_dist=0.1):
    try:
        import umap
    except ImportError:
        raise MlplabError("UMAP needs the optional extra: pip install 'mlplab[umap]'") from None
    n_neighbors = int(min(n_neighbors, len(x) - 1))
    if n_neighbors < 2:
        raise MlplabError(f"UMAP needs at least 3 points, got {len(x)}")
    # A fixed random_state makes umap-learn run single-threaded: the price of reproducible output.
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed, n_jobs=1)
    coords = reducer.fit_transform(x)
    params = {"n_neighbors": n_neighbors, "min_dist": float(min_dist)}
    return coords, params, f"UMAP, {n_neighbors} neighbours, min_dist {min_dist:g} (seeded: single-threaded)"


def classical_mds(x: np.ndarray) -> np.ndarray:
    """Classical (Torgerson) MDS of the Euclidean distances between rows of x, in 2-D.

    Torgerson's method takes the top eigenvectors of B = -1/2 J D^2 J (J centres). For Euclidean D, B equals
    Xc Xc^T with Xc the centred data, and Xc Xc^T shares its non-zero eigenvalues with the D x D matrix
    Xc^T Xc; its eigenvectors v give B's as Xc v. So we solve the small D x D eigenproblem: the same
    coordinates, exactly, in O(N D^2) time and O(D^2) extra memory instead of O(N^2).
    """
    xc = np.asarray(x, dtype=np.float64)
    xc = xc - xc.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(xc.T @ xc)  # ascending
    top = eigvec[:, ::-1][:, :2]
    coords = xc @ top  # (N, 2); column norms are sqrt(eigenvalues), Torgerson's scaling
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    # Fix each axis' sign (largest-magnitude coordinate positive) so the output does not flip between BLAS builds.
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), np.arange(2)])
    return coords * np.where(signs == 0, 1, signs)


CLASSICAL_MDS_NOTE = ("classical (Torgerson) MDS: {n} points is above the SMACOF limit of {limit}; on Euclidean "
                      "distances this is PCA up to the sign of each axis")


def _smacof(max_iter: int, seed: int):
    """scikit-learn's metric MDS estimator, across the versions pyproject.toml accepts.

    scikit-learn 1.8 renamed metric= to metric_mds= (metric= now names the distance) and added init=; older
    releases know neither. The keywords are chosen by the constructor's signature, not by version numbers.
    eps is given explicitly because its default changed (1e-3 -> 1e-6) between the releases we accept.
    """
    from sklearn.manifold import MDS

    accepted = pyinspect.signature(MDS).parameters
    kind = {"metric_mds": True, "init": "classical_mds"} if "metric_mds" in accepted else {"metric": True}
    return MDS(n_components=2, n_init=1, max_iter=max_iter, eps=1e-6, random_state=seed, normalized_stress="auto",
               **kind)


def _mds(x, seed, max_iter=300, smacof_max_n=SMACOF_MAX_N):
    n = len(x)
    if n > smacof_max_n:
        coords = classical_mds(x)
        return coords, {"algorithm": "classical"}, CLASSICAL_MDS_NOTE.format(n=n, limit=smacof_max_n)
    # Start SMACOF from the classical solution: fewer iterations, and one deterministic start instead of
    # several random ones.
    init = classical_mds(x)
    mds = _smacof(max_iter, seed)
    coords = mds.fit_transform(x, init=init)
    return coords, {"algorithm": "smacof", "max_iter": int(max_iter), "stress": float(mds.stress_)}, (
        f"metric MDS (SMACOF), stress {mds.stress_:.3g}")


@dataclass(frozen=True)
class Method:
    """One embedding method: everything the CLI, pictures, reports and experiment files need to know."""

    name: str                  # on the command line, in experiment files and in file names (<layer>-<name>)
    title: str                 # on pictures and in reports
    fn: Callable               # fn(x, seed, **options) -> (coords (N, 2), params dict, note str)
    linear: bool               # coordinates in the units of the data (the others are scale-free)
    description: str           # one line for help texts

    @property
    def options(self) -> tuple[str, ...]:
        """Keyword options fn accepts besides the features and the seed."""
        return tuple(p for p in pyinspect.signature(self.fn).parameters if p not in ("x", "seed"))


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("tsne", "t-SNE", _tsne, linear=False, description="openTSNE; keeps local neighbourhoods, separates clusters"),
    Method("umap", "UMAP", _umap, linear=False, description="umap-learn (optional: pip install 'mlplab[umap]')"),
    Method("mds", "MDS", _mds, linear=True,
           description=f"metric MDS (SMACOF); above {SMACOF_MAX_N:,} points classical MDS, which is PCA up to sign"),
    Method("pca", "PCA", _pca, linear=True, description="the two directions of largest variance"),
)}


def method_title(name: str) -> str:
    """The display title of a method name ("tsne" -> "t-SNE"); unknown names are shown as they are."""
    method = METHODS.get(str(name).lower())
    return method.title if method else str(name)


def get_method(name: str) -> Method:
    """The registry entry for `name`, or one MlplabError line that lists the allowed names."""
    method = METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        raise MlplabError(f"unknown embedding method {name!r}; choose one of: {', '.join(METHODS)}")
    return method


def check_features(features) -> np.ndarray:
    x = np.asarray(features)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise MlplabError(f"features must be numeric, got dtype {x.dtype}")
    if x.ndim != 2:
        raise MlplabError(f"features must be a 2-D array (samples, features), got shape {x.shape}")
    if len(x) < 3:
        raise MlplabError(f"need at least 3 samples to embed, got {len(x)}")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise MlplabError(f"features contain NaN or infinite values in {len(rows)} rows (first: row {rows[0]})")
    return x


def embed(features, method: str = "tsne", seed: int = 0, **options) -> Embedding:
    """Map features (N, D) to 2-D with `method` (one of METHODS). Same input and seed -> identical coords."""
    entry = get_method(method)
    allowed = entry.options
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise MlplabError(f"unknown option {unknown[0]!r} for {method}; allowed: {', '.join(allowed) or 'none'}")
    x = check_features(features)
    x = x.astype(np.float32, copy=False)
    start = time.perf_counter()
    if len(x) and not np.ptp(x, axis=0).any():
        # Every row the same (a dead layer, a constant input): there is no structure to map, and openTSNE's
        # PCA initialisation divides by the spread, which crashed its FFT code with a segmentation fault.
        coords, params = np.zeros((len(x), 2)), {}
        note = f"all {len(x)} feature vectors are identical (a dead layer?): nothing to map, every point at (0, 0)"
    else:
        # One power-of-two scale (exact in floating point) brings the features to [-2, 2]: features of size 1e20
        # overflowed inside the libraries (float32 squares), giving NaN maps, LinAlgErrors, and a segmentation
        # fault in openTSNE's FFT code. t-SNE and UMAP do not depend on the scale; PCA and MDS coordinates are
        # scaled back, exactly, to the units of the data.
        shift = int(np.floor(np.log2(float(np.abs(x).max()))))  # the max is > 0: not all rows are identical
        coords, params, note = entry.fn(np.ldexp(x, -shift).astype(np.float32, copy=False), int(seed), **options)
        if entry.linear:
            coords = np.ldexp(np.asarray(coords, dtype=np.float64), shift)
    seconds = time.perf_counter() - start
    coords = np.ascontiguousarray(coords, dtype=np.float32)
    if not np.isfinite(coords).all():
        raise MlplabError(f"{method} produced non-finite coordinates for these {len(x)} points; "
                          f"try another method (allowed: {', '.join(METHODS)})")
    log.info("%s of %d x %d in %.2f s: %s", method, x.shape[0], x.shape[1], seconds, note)
    return Embedding(coords=coords, method=method, params={"seed": int(seed), **params}, seconds=seconds, note=note)
