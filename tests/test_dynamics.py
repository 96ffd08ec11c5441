"""Training dynamics: snapshots during training, aligned maps across epochs, their scores, the CLI verb and
its bad inputs, the report section and the library call. Digits, tiny nets, few epochs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlplab.errors import MlplabError
from mlplab.train.snapshots import STAT_NAMES, SnapshotSpec

SPEC = "32:relu,dropout:0.1,16:relu,10:softmax"
EPOCHS = 4


def mlplab_cli(*args):
    p = subprocess.run([sys.executable, "-m", "mlplab", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A digits run with snapshots of every dense layer after every epoch (val split 0.4: 575 points)."""
    from mlplab.runs.session import train_run
    from mlplab.train.options import TrainOptions

    path = tmp_path_factory.mktemp("dyn") / "run"
    opts = TrainOptions(data="digits", model=SPEC, epochs=EPOCHS, batch_size=32, val_split=0.4, lr=0.1,
                        threads=1, snapshots="every=1,layers=all,n=500")
    train_run(opts, path)
    return path


def test_spec_parsing_and_its_errors():
    assert SnapshotSpec.parse("default") == SnapshotSpec(1, "all", 2000)
    assert SnapshotSpec.parse("every=3,layers=dense_1+dense_2,n=64") == SnapshotSpec(3, ("dense_1", "dense_2"), 64)
    for bad, words in [("every=0", "every must be an integer >= 1"), ("often", "unknown part 'often'"),
                       ("n=2", "at least 4"), ("every=1,every=2", "given twice"), ("layers=", "layers needs")]:
        with pytest.raises(MlplabError, match=words):
            SnapshotSpec.parse(bad)


def test_snapshot_files_hold_every_epoch_with_statistics(run):
    from mlplab.runs.snapshots import load_series

    folder = run / "dynamics" / "snapshots"
    assert sorted(p.name for p in folder.glob("epoch_*.npz")) == [f"epoch_{e:03d}.npz" for e in range(EPOCHS + 1)]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["layers"] == ["dense_1", "dense_2", "dense_3"] and meta["split"] == "val" and meta["n"] == 500
    s = load_series(run)
    assert s.epochs == list(range(EPOCHS + 1))
    assert s.acts["dense_1"][0].dtype == np.float16 and s.acts["dense_1"][0].shape == (500, 32)
    st = s.stats["dense_1"]
    assert st.shape == (EPOCHS + 1, len(STAT_NAMES))
    col = dict(zip(STAT_NAMES, st.T))
    assert math.isnan(col["update_ratio"][0]) and (col["update_ratio"][1:] > 0).all()
    assert ((col["dead_fraction"] >= 0) & (col["dead_fraction"] <= 1)).all()
    assert math.isnan(s.stats["dense_3"][0, STAT_NAMES.index("dead_fraction")])  # softmax: no dead ReLUs
    assert np.allclose(col["act_mean"][-1], np.asarray(s.acts["dense_1"][-1], np.float64).mean(), atol=1e-3)
    # the network learns: the last layer separates the classes better after training than before
    from mlplab.inspect.dynamics import knn_accuracy_loo

    first, last = (knn_accuracy_loo(np.asarray(s.acts["dense_2"][e], np.float32), s.labels) for e in (0, -1))
    assert last > first + 0.05


@pytest.mark.parametrize("kernel", [True, False], ids=["c-ranks", "torch-ranks"])
def test_fast_scores_equal_scikit_learn(kernel, monkeypatch):
    from sklearn.datasets import load_digits
    from sklearn.manifold import trustworthiness
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    from mlplab.inspect import tsne
    from mlplab.inspect.dynamics import knn_accuracy_loo, score_map, trustworthiness_fast

    if kernel and not tsne.available():
        pytest.skip(f"no compiled kernel here: {tsne.status()}")
    if not kernel:
        monkeypatch.setattr(tsne, "rank_count", lambda d2, idx: None)
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    x = (x[:600] + rng.normal(0, 0.1, (600, 64))).astype(np.float32)  # no tied distances
    y = y[:600]
    for spread in (2.0, 0.3):  # a poor map (many far neighbours) and a good one
        m = x[:, :2] + rng.normal(0, spread, (600, 2)).astype(np.float32)
        expected = trustworthiness(x, m, n_neighbors=10)
        assert trustworthiness_fast(m, x) == pytest.approx(expected, abs=1e-6)
        loo = cross_val_predict(KNeighborsClassifier(10), m, y, cv=LeaveOneOut())
        assert knn_accuracy_loo(m, y) == pytest.approx((loo == y).mean(), abs=1e-12)
        knn_map, knn_layer, trust = score_map(m, x * 1e20, y)  # huge activations: no overflow to inf
        assert (knn_map, trust) == (pytest.approx((loo == y).mean(), abs=1e-12), pytest.approx(expected, abs=1e-6))
        assert knn_layer == pytest.approx(knn_accuracy_loo(x, y), abs=1e-12)


@pytest.fixture(scope="module")
def independent(run):
    """Independent t-SNE maps of dense_2 at every epoch, as `mlplab embed` draws them (openTSNE), and their
    scores: the reference the aligned maps are held to."""
    from mlplab.inspect.dynamics import score_map
    from mlplab.inspect.embed import embed
    from mlplab.runs.snapshots import load_series

    s = load_series(run)
    feats = [np.asarray(a, np.float32) for a in s.acts["dense_2"]]
    maps = np.stack([embed(f, "tsne", 0, n_jobs=1).coords for f in feats])
    return feats, s.labels, maps, np.array([score_map(c, f, s.labels) for c, f in zip(maps, feats)])


@pytest.mark.parametrize("gradient", ["exact", "fft"])
def test_aligned_tsne_is_aligned_and_as_good_as_independent_maps(independent, gradient):
    from mlplab.inspect import tsne
    from mlplab.inspect.dynamics import consecutive_disparity, layer_dynamics

    if gradient == "exact" and not tsne.available():
        pytest.skip(f"no exact t-SNE kernel here: {tsne.status()}")
    feats, labels, maps, ind_scores = independent
    d = layer_dynamics("dense_2", feats, labels, method="tsne", n_jobs=1, gradient=gradient)
    assert d.params["gradient"] == gradient
    # quality: within 0.01 of independent maps on average over the epochs, never far off in any one
    assert (d.knn_map - ind_scores[:, 0]).mean() > -0.01 and (d.knn_map - ind_scores[:, 0]).min() > -0.03
    assert (d.trust - ind_scores[:, 2]).mean() > -0.01 and (d.trust - ind_scores[:, 2]).min() > -0.02
    assert np.allclose(d.knn_layer, ind_scores[:, 1])
    # alignment: consecutive maps differ far less than independent ones do
    ind_disp = consecutive_disparity(maps)[1:]
    # this tiny net changes a lot per epoch (its own maps move), yet aligned maps move less than independent ones
    assert np.nanmean(d.disparity[1:]) < 0.75 * np.nanmean(ind_disp)
    # an epoch whose features barely changed keeps its map (independent maps of noisy copies need not)
    again = layer_dynamics("dense_2", [feats[-1], feats[-1] + np.float32(1e-3)], labels, method="tsne", n_jobs=1,
                           score=False, gradient=gradient)
    assert again.disparity[1] < 0.03


def test_exact_tsne_gradient_equals_autograd_and_steps_as_opentsne():
    """tsne.c's gradient against torch.autograd of the objective it descends, and its optimiser against
    openTSNE's gradient descent (exact Barnes-Hut, theta 0) on the same affinities and start."""
    import scipy.sparse as sp
    import torch
    from openTSNE import TSNEEmbedding
    from openTSNE.affinity import Affinities as OpenAffinities
    from openTSNE.affinity import PerplexityBasedNN
    from sklearn.datasets import load_digits

    from mlplab.inspect import tsne

    if not tsne.available():
        pytest.skip(f"no exact t-SNE kernel here: {tsne.status()}")
    x = load_digits().data[:400] + np.random.default_rng(1).normal(0, 0.1, (400, 64))  # no tied distances
    p = tsne.affinities_of(x, perplexity=20)
    pm = sp.csr_matrix((p.data, p.indices, p.indptr), shape=(400, 400))
    assert pm.sum() == pytest.approx(1.0) and abs(pm - pm.T).max() < 1e-15 and p.unconverged == 0
    # the same affinities as openTSNE's exact ones
    ref = PerplexityBasedNN(x, perplexity=20, method="exact", verbose=False).P.tocsr()
    assert abs(pm - ref).max() < 1e-3 * ref.max()

    rng = np.random.default_rng(0)
    y = rng.normal(size=(400, 2)) * 3
    for exaggeration in (1.0, 4.0):
        yt = torch.tensor(y, requires_grad=True)
        q = 1 / (1 + torch.cdist(yt, yt) ** 2)
        q = q - torch.diag(torch.diag(q))  # q_ii = 0
        pd = torch.tensor(pm.toarray())
        # KL(P || Q) up to a constant, with the attraction exaggerated: -a sum p log q + log Z
        objective = -(exaggeration * pd * torch.log(q + torch.eye(400))).sum() + torch.log(q.sum())
        objective.backward()
        np.testing.assert_allclose(tsne.gradient(y, p, exaggeration), yt.grad.numpy() / 4, rtol=1e-4, atol=1e-9)

    class Fixed(OpenAffinities):
        def __init__(self, matrix):
            self.P = matrix

    emb = TSNEEmbedding(y.copy(), Fixed(pm.copy()), negative_gradient_method="bh", theta=0.0, random_state=0,
                        verbose=False, n_jobs=1)
    theirs = np.asarray(emb.optimize(5, exaggeration=4.0, momentum=0.5, learning_rate="auto"))
    ours, state = tsne.optimize(y, p, 5, exaggeration=4.0, momentum=0.5)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert state.iterations == [(5, 4.0)] and np.array_equal(y, y)  # the caller's map is left alone


def test_exact_tsne_is_off_without_the_kernel(monkeypatch):
    from mlplab.inspect import tsne
    from mlplab.inspect.dynamics import aligned_tsne

    monkeypatch.setenv("MLPLAB_KERNELS", "0")
    tsne._reset()
    try:
        assert not tsne.available() and "MLPLAB_KERNELS=0" in tsne.status()
        rng = np.random.default_rng(0)
        feats = [rng.normal(size=(60, 5)).astype(np.float32) for _ in range(2)]
        coords, params = aligned_tsne(feats, gradient="auto", n_jobs=1)
        assert params["gradient"] == "fft" and np.isfinite(coords).all()
        with pytest.raises(MlplabError, match="exact t-SNE is unavailable here"):
            aligned_tsne(feats, gradient="exact")
    finally:
        monkeypatch.delenv("MLPLAB_KERNELS")
        tsne._reset()


def test_procrustes_disparity_equals_scipy():
    from scipy.spatial import procrustes

    from mlplab.inspect.dynamics import procrustes_disparity

    rng = np.random.default_rng(3)
    for noise in (0.0, 0.1, 1.0, 10.0):
        a = rng.normal(size=(200, 2))
        b = 3 * a @ np.array([[0.6, -0.8], [0.8, 0.6]]) + 5 + noise * rng.normal(size=(200, 2))
        assert procrustes_disparity(a, b) == pytest.approx(procrustes(a, b)[2], abs=1e-12)
    assert math.isnan(procrustes_disparity(np.ones((5, 2)), a[:5]))


def test_aligned_pca_fixes_signs_and_keeps_quality():
    from mlplab.inspect.dynamics import aligned_pca, consecutive_disparity
    from mlplab.inspect.embed import embed

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12)) * np.arange(12, 0, -1)
    series = [x, -x, x + rng.normal(0, 0.01, x.shape)]  # a sign flip of the data must not flip the map
    coords, _ = aligned_pca([a.astype(np.float32) for a in series])
    # PCA of -x is PCA of x with both axes negated: the aligned map undoes that, an independent one does not
    assert np.allclose(coords[1], coords[0], atol=1e-3)
    assert np.allclose(coords[2], coords[0], atol=0.05)
    assert consecutive_disparity(coords)[1] < 1e-6
    # each map is its epoch's PCA up to signs, so its neighbourhoods (and scores) are the independent map's
    for c, a in zip(coords, series):
        assert np.allclose(np.abs(c), np.abs(embed(a, "pca").coords), atol=1e-3)


def test_aligned_umap_on_digits_is_aligned_finite_and_drawn(run):
    """`mlplab dynamics RUN --method umap` (umap-learn's AlignedUMAP): finite maps, as good as independent UMAP
    maps, moving less between epochs than they do, and the page and files written."""
    pytest.importorskip("umap", reason="umap-learn is not installed (pip install 'mlplab[umap]')")
    from mlplab.inspect.dynamics import consecutive_disparity, score_map
    from mlplab.inspect.embed import embed
    from mlplab.runs.dynamics import write_dynamics

    result = write_dynamics(run, "umap", ["dense_2"], gif=False)
    d = result.layers["dense_2"]
    feats = [np.asarray(a, np.float32) for a in result.series.acts["dense_2"]]
    labels = result.series.labels
    assert d.coords.shape == (EPOCHS + 1, 500, 2) and np.isfinite(d.coords).all()
    assert d.params["unplaced"] == 0 and d.params["n_neighbors"] == 15
    independent = np.stack([embed(f, "umap", 0).coords for f in feats])
    ind = np.array([score_map(c, f, labels) for c, f in zip(independent, feats)])
    # measured here: 10-NN accuracy -0.002 and trustworthiness -0.004 on average, disparity 0.13 vs 0.38
    assert (d.knn_map - ind[:, 0]).mean() > -0.01 and (d.trust - ind[:, 2]).mean() > -0.01
    assert np.nanmean(d.disparity[1:]) < 0.6 * np.nanmean(consecutive_disparity(independent)[1:])
    folder = run / "dynamics"
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "UMAP" in page and "epoch_slider" in page and "Content-Security-Policy" in page
    scores = json.loads((folder / "scores.json").read_text())
    assert scores["method"] == "umap" and list(scores["layers"]) == ["dense_2"]
    with np.load(folder / "maps-umap.npz") as maps:
        np.testing.assert_array_equal(maps["coords.dense_2"], d.coords)


def test_aligned_umap_survives_a_dead_epoch():
    pytest.importorskip("umap", reason="umap-learn is not installed (pip install 'mlplab[umap]')")
    from mlplab.inspect.dynamics import aligned_umap

    rng = np.random.default_rng(0)
    live = rng.normal(size=(120, 6)).astype(np.float32)
    coords, params = aligned_umap([np.zeros((120, 6), np.float32), live, live + np.float32(0.01)], seed=0)
    assert np.isfinite(coords).all() and not coords[0].any() and np.ptp(coords[1], axis=0).all()


def test_cli_writes_page_gif_curves_and_report_section(run, tmp_path):
    code, out, err = mlplab_cli("dynamics", run, "--method", "pca")
    assert code == 0, err
    folder = run / "dynamics"
    for name in ("index.html", "dynamics.gif", "separability.png", "stats.png", "scores.json", "maps-pca.npz"):
        assert (folder / name).stat().st_size > 1000, name
    scores = json.loads((folder / "scores.json").read_text())
    assert scores["epochs"] == list(range(EPOCHS + 1)) and set(scores["layers"]) == {"dense_1", "dense_2", "dense_3"}
    assert scores["layers"]["dense_2"]["procrustes_disparity"][0] is None
    from PIL import Image

    with Image.open(folder / "dynamics.gif") as im:
        assert im.n_frames == EPOCHS + 1 + 2 * EPOCHS  # a frame per epoch and two in between
    page = (folder / "index.html").read_text()
    assert "Content-Security-Policy" in page and "data:image/png;base64" in page  # offline, with thumbnails
    from mlplab.runs.folder import open_run
    from mlplab.runs.report import write_run_report

    html = write_run_report(open_run(run)).report.read_text()
    assert '<section id="dynamics"><h2>Training dynamics</h2>' in html and "data:image/gif;base64," in html
    assert html.index('id="embeddings"') < html.index('id="dynamics"') < html.index('id="config"')


def _one_line_exit_2(args, *words):
    code, _, err = mlplab_cli(*args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_input_is_one_line_and_exit_2(run, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    code, _, err = mlplab_cli("train", "--data", "digits", "--model", "8:relu,10:softmax", "--epochs", "1",
                              "--out", bare, "--quiet", "--threads", "1")
    assert code == 0, err
    _one_line_exit_2(["dynamics", bare], "has no snapshots", "--snapshots default")
    _one_line_exit_2(["dynamics", run, "--layer", "dense_9"], "unknown layer 'dense_9'", "dense_1, dense_2, dense_3")
    _one_line_exit_2(["dynamics", tmp_path / "nowhere"], "does not exist")
    _one_line_exit_2(["train", "--data", "digits", "--model", "8:relu,10:softmax", "--snapshots", "layers=x",
                      "--out", tmp_path / "x"], "unknown layer 'x'", "dense_1")
    _one_line_exit_2(["train", "--data", "digits", "--snapshots", "every=0", "--out", tmp_path / "y"],
                     "every must be an integer >= 1")
    assert not (tmp_path / "x").exists()
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    f = damaged / "dynamics" / "snapshots" / "epoch_002.npz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    _one_line_exit_2(["dynamics", damaged, "--method", "pca"], "epoch_002.npz is damaged")
    f.write_bytes(b"not a zip at all")
    _one_line_exit_2(["dynamics", damaged, "--method", "pca"], "epoch_002.npz is damaged")


def test_train_help_lists_snapshots():
    code, out, _ = mlplab_cli("train", "--help")
    assert code == 0 and "--snapshots" in out and "every=N" in out


def test_library_call_with_an_in_memory_callback():
    import mlplab
    from mlplab.data import load_dataset, to_features

    ds = load_dataset("digits")
    x, y = to_features(ds.x_train), ds.y_train
    model = mlplab.build("16:relu,10:softmax", x.shape[1], seed=0)
    snaps = mlplab.Snapshots(x[:200], ["dense_1"], every=1)
    mlplab.fit(model, x, y, epochs=2, batch_size=64, lr=0.1, callbacks=[snaps], threads=1)
    d = mlplab.dynamics(snaps, method="pca", labels=y[:200])
    assert d.epochs == [0, 1, 2] and d.coords("dense_1").shape == (3, 200, 2)
    assert len(snaps.seconds) == 3 and all(s > 0 for s in snaps.seconds)  # each snapshot's own time
    assert np.isfinite(d.layers["dense_1"].knn_map).all()
    assert d._repr_html_().startswith("<div><img src='data:image/gif;base64,")
    with pytest.raises(MlplabError, match="unknown layer 'dense_2'; the snapshots have: dense_1"):
        mlplab.dynamics(snaps, method="pca", layers=["dense_2"], labels=y[:200])


def _series_arrays(run: Path) -> dict:
    out = {}
    for p in sorted((run / "dynamics" / "snapshots").glob("epoch_*.npz")):
        with np.load(p) as z:
            out[p.name] = {k: z[k].copy() for k in z.files}
    return out


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL and /proc/self/fd are Linux features")
def test_snapshot_series_identical_after_kill_9_and_resume(tmp_path):
    from test_faults import KILL_IN_WRITE

    args = ["train", "--data", "digits", "--model", "16:relu,dropout:0.2,10:softmax", "--epochs", "3",
            "--batch-size", "64", "--threads", "1", "--quiet", "--snapshots", "every=1,layers=all,n=100"]
    ref = tmp_path / "ref"
    code, _, err = mlplab_cli(*args, "--out", ref)
    assert code == 0, err
    expected = _series_arrays(ref)
    assert len(expected) == 4
    # killed (1) inside the write of epoch 2's snapshot, (2) after epoch 2's snapshot but inside the write of
    # epoch 2's checkpoint: the snapshot on disk is past the checkpoint and must be replaced on resume
    for target, nth, where in (("epoch_002.npz", 1, "mid-write"), ("last.safetensors", 2, "before-rename")):
        run = tmp_path / f"kill-{target}"
        proc = subprocess.run([sys.executable, "-c", KILL_IN_WRITE, target, str(nth), where, *args, "--out", str(run)],
                              capture_output=True, text=True)
        assert proc.returncode == -9, proc.stderr
        code, _, err = mlplab_cli("train", "--resume", run, "--epochs", 3, "--threads", 1, "--quiet")
        assert code == 0, err
        got = _series_arrays(run)
        assert list(got) == list(expected)
        for name, arrays in expected.items():
            assert set(got[name]) == set(arrays)
            for key, value in arrays.items():
                np.testing.assert_array_equal(got[name][key], value, err_msg=f"{target}: {name} {key}")
        assert not [p for p in (run / "dynamics" / "snapshots").iterdir() if p.name.endswith(".tmp")]


PROBE = """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var out = document.createElement('div'); out.id = 'mlplab-probe';
  try {
    var doc = Bokeh.documents[0];
    var src = doc.get_model_by_name('positions'), slider = doc.get_model_by_name('epoch_slider');
    var before = [src.data['x0'][0], src.data['y0'][0], src.data['x1'][5]];
    slider.value = 0;  // BokehJS runs the CustomJS callback asynchronously
    setTimeout(function () {
      var after = [src.data['x0'][0], src.data['y0'][0], src.data['x1'][5]];
      out.setAttribute('data-before', before.join(',')); out.setAttribute('data-after', after.join(','));
      out.setAttribute('data-info', doc.get_model_by_name('epoch_info').text);
      out.setAttribute('data-panels', [0, 1, 2].filter(function (k) { return doc.get_model_by_name('panel' + k); }).length);
      document.body.appendChild(out);
    }, 500);
  } catch (e) { out.setAttribute('data-error', String(e)); document.body.appendChild(out); }
}, 500); });
</script>"""


def test_page_in_headless_chromium_slider_moves_points(run, tmp_path):
    import re

    from test_report_browser import CHROMIUM, chromium, console_problems, page_requests

    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed")
    from mlplab.runs.dynamics import write_dynamics

    write_dynamics(run, "pca", ["dense_1", "dense_2"], gif=False)
    page = run / "dynamics" / "index.html"
    probe = tmp_path / "probe.html"
    html = page.read_text(encoding="utf-8")
    at = html.rindex("</body>")  # the last one: BokehJS itself holds the string "</body>"
    probe.write_text(html[:at] + PROBE + html[at:], encoding="utf-8")
    proc, netlog = chromium(["--virtual-time-budget=8000", "--dump-dom", probe.as_uri()], tmp_path, "dyn")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_problems(proc.stderr) == []
    assert page_requests(netlog) == []
    m = re.search(r'<div id="mlplab-probe"([^>]*)>', proc.stdout)
    assert m, "the probe did not run"
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', m.group(1)))
    assert "error" not in attrs, attrs
    before = [float(v) for v in attrs["before"].split(",")]
    after = [float(v) for v in attrs["after"].split(",")]

    coords = np.load(run / "dynamics" / "maps-pca.npz")
    # the page holds its points in class order (the legend's order): its rows 0 and 5 are these samples
    row = np.argsort(coords["labels"], kind="stable")
    assert np.allclose(before, [coords["coords.dense_1"][-1, row[0], 0], coords["coords.dense_1"][-1, row[0], 1],
                                coords["coords.dense_2"][-1, row[5], 0]], atol=1e-4)
    assert np.allclose(after, [coords["coords.dense_1"][0, row[0], 0], coords["coords.dense_1"][0, row[0], 1],
                               coords["coords.dense_2"][0, row[5], 0]], atol=1e-4)
    assert "epoch 0" in attrs["info"] and int(attrs["panels"]) == 2
