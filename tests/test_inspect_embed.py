"""Embeddings and their quality scores, on scikit-learn's bundled 8x8 digits (offline)."""

import sys

import numpy as np
import pytest
from scipy.spatial import procrustes
from scipy.spatial.distance import pdist
from sklearn.datasets import load_digits

from mlplab.errors import MlplabError
from mlplab.inspect import METHODS, embed, quality
from mlplab.inspect.embed import classical_mds


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def digits_tsne(digits):
    x, y = digits
    return embed(x, "tsne", seed=0, n_jobs=1)


def test_tsne_separates_digits_and_keeps_neighbours(digits, digits_tsne):
    x, y = digits
    e = digits_tsne
    assert e.coords.shape == (len(x), 2) and e.coords.dtype == np.float32
    q = quality(e.coords, y, x)
    # Measured 0.987 / 0.992 (Barnes-Hut at this N) and 0.987 / 0.992 (FFT); pixels in 2-D by PCA: 0.64 / 0.83.
    assert q["knn_accuracy"] >= 0.95
    assert q["trustworthiness"] >= 0.98
    assert e.params["pca_dims"] == 50 and e.params["early_exaggeration_iter"] == 125
    assert "openTSNE" in e.note and e.seconds > 0


def test_tsne_fft_path_quality(digits):
    x, y = digits[0][:800], digits[1][:800]
    e = embed(x, "tsne", seed=0, n_jobs=1, negative_gradient_method="fft")
    q = quality(e.coords, y, x)
    assert e.params["negative_gradient_method"] == "fft" and "FFT" in e.note
    assert q["knn_accuracy"] >= 0.95 and q["trustworthiness"] >= 0.98


def test_same_seed_same_coords_other_seed_other_coords(digits, digits_tsne):
    x, _ = digits
    again = embed(x, "tsne", seed=0, n_jobs=1)
    assert np.array_equal(again.coords, digits_tsne.coords)
    other = embed(x, "tsne", seed=1, n_jobs=1)
    assert not np.array_equal(other.coords, digits_tsne.coords)


def test_tiny_input_lowers_perplexity(digits):
    x, _ = digits
    e = embed(x[:30], "tsne", n_jobs=1)
    assert e.params["perplexity"] == pytest.approx(29 / 3)
    assert "perplexity lowered" in e.note


def test_pca_is_exact_and_reports_variance(digits):
    x, y = digits
    e = embed(x, "pca")
    xc = x - x.mean(axis=0)
    # Same distances as projecting on the top two principal axes.
    _, _, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
    ref = xc @ vt[:2].T
    assert np.allclose(np.abs(e.coords), np.abs(ref), atol=1e-3)
    assert 0.2 < sum(e.params["explained_variance_ratio"]) < 0.35  # 28.5% for digits
    assert quality(e.coords, y, x)["knn_accuracy"] < 0.75  # PCA does not separate the digits: t-SNE is needed


def torgerson(x):
    """Textbook classical MDS: double-centre the squared distance matrix, top eigenvectors."""
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    n = len(x)
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ d2 @ j
    w, v = np.linalg.eigh(b)
    return v[:, ::-1][:, :2] * np.sqrt(w[::-1][:2])


def test_classical_mds_matches_the_textbook_double_centring(digits):
    x = digits[0][:150].astype(np.float64)
    ours, ref = classical_mds(x), torgerson(x)
    for k in range(2):  # equal up to the sign of each axis
        assert np.allclose(ours[:, k], ref[:, k], atol=1e-6) or np.allclose(ours[:, k], -ref[:, k], atol=1e-6)


def test_mds_recovers_planar_data_exactly():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(120, 2)) * [3.0, 1.0]
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    x = plane @ q[:2] + 5.0  # a rotated, shifted plane in 10-D: distances are exactly 2-D
    small = embed(x, "mds", seed=0)                       # SMACOF
    big = embed(x, "mds", seed=0, smacof_max_n=50)        # classical path, as for large N
    assert small.params["algorithm"] == "smacof" and "SMACOF" in small.note
    assert big.params["algorithm"] == "classical" and "classical" in big.note
    for e in (small, big):
        assert np.allclose(pdist(e.coords), pdist(plane), rtol=1e-3, atol=1e-3)
    assert procrustes(small.coords, big.coords)[2] < 1e-6


def test_mds_on_digits_is_reproducible(digits):
    x, y = digits
    a, b = embed(x[:300], "mds", seed=3), embed(x[:300], "mds", seed=3)
    assert np.array_equal(a.coords, b.coords)
    assert quality(a.coords, y[:300], x[:300])["trustworthiness"] > 0.8


def test_umap_quality(digits):
    pytest.importorskip("umap")
    x, y = digits[0][:600], digits[1][:600]
    e = embed(x, "umap", seed=0)  # most of the time is numba compiling umap-learn, once per process
    q = quality(e.coords, y, x)
    assert q["knn_accuracy"] >= 0.93 and q["trustworthiness"] >= 0.95  # all 1,797: 0.987 / 0.988


def test_umap_missing_gives_the_install_line(digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap -> ImportError
    with pytest.raises(MlplabError, match=r"UMAP needs the optional extra: pip install 'mlplab\[umap\]'"):
        embed(digits[0][:50], "umap")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused(bad):
    x = np.ones((20, 3), dtype=np.float32)
    x[7, 1] = bad
    with pytest.raises(MlplabError, match="NaN or infinite values in 1 rows .first: row 7"):
        embed(x, "pca")


def test_bad_method_option_and_shape():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(MlplabError, match="choose one of: tsne, umap, mds, pca"):
        embed(x, "lle")
    with pytest.raises(MlplabError, match="unknown option 'perplexty' for tsne; allowed: perplexity"):
        embed(x, "tsne", perplexty=5)
    with pytest.raises(MlplabError, match="2-D array"):
        embed(x[0], "pca")
    with pytest.raises(MlplabError, match="at least 3 samples"):
        embed(x[:2], "pca")
    assert list(METHODS) == ["tsne", "umap", "mds", "pca"]


def test_quality_extremes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100]])
    separated = centres[y] + rng.normal(size=(200, 2))
    q = quality(separated, y, separated)
    assert q["knn_accuracy"] == 1.0 and q["trustworthiness"] == pytest.approx(1.0)
    noise = rng.normal(size=(200, 2))
    assert quality(noise, y)["knn_accuracy"] < 0.45  # chance is 0.25
    assert quality(noise, y)["trustworthiness"] is None  # no features given


def test_trustworthiness_subsample_is_seeded():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2600, 5))
    c = x[:, :2] + 0.1 * rng.normal(size=(2600, 2))
    y = (x[:, 0] > 0).astype(int)
    assert quality(c, y, x) == quality(c, y, x)


@pytest.mark.parametrize("method", ["tsne", "mds", "pca"])
def test_identical_feature_vectors_map_to_the_origin(method):
    """3,000 identical rows (a dead layer) took t-SNE's FFT path to a segmentation fault before this check."""
    e = embed(np.full((3000, 8), 0.25, np.float32), method, seed=0)
    assert e.coords.shape == (3000, 2) and (e.coords == 0).all()
    assert "identical" in e.note


@pytest.mark.parametrize("scale", [1e20, 1e-20])
@pytest.mark.parametrize("method", ["tsne", "mds", "pca"])
def test_feature_scale_does_not_break_maps(method, scale):
    """Features of size 1e20 gave NaN maps (MDS), LinAlgErrors (PCA) and a segmentation fault (t-SNE, FFT path,
    3,000 points). Now every method works at any scale; PCA and MDS stay in the units of the data."""
    x = np.random.default_rng(0).normal(size=(3000, 8))
    x[:, 0] *= 3  # a dominant direction, so PCA and MDS have a well-defined first axis
    ref = embed(x.astype(np.float32), method, seed=0).coords
    got = embed((x * scale).astype(np.float32), method, seed=0).coords
    assert np.isfinite(got).all()
    if method == "tsne":
        assert quality(got, (x[:, 0] > 0).astype(int))["knn_accuracy"] > 0.9  # the dominant axis still separates
    else:
        np.testing.assert_allclose(got / scale, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
