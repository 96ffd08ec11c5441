"""Training dynamics of a run: aligned maps of its snapshots, scores, and the files under RUN/dynamics/.

    RUN/dynamics/index.html        interactive page (epoch slider, play button, hover thumbnails)
    RUN/dynamics/dynamics.gif      the animation (report, README)
    RUN/dynamics/separability.png  10-NN accuracy per layer, in the layer and in the map, per epoch
    RUN/dynamics/stats.png         per-layer statistics per epoch
    RUN/dynamics/maps-<method>.npz coordinates (E, N, 2) per layer, epochs, labels
    RUN/dynamics/scores.json       per layer and epoch: disparity, 10-NN accuracies, trustworthiness
"""

from __future__ import annotations

import base64
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlplab.atomic import atomic_write_bytes, atomic_write_text, write_npz
from mlplab.errors import MlplabError
from mlplab.inspect.dynamics import ALIGNED_METHODS, LayerDynamics, layer_dynamics
from mlplab.runs.folder import open_run, own_folder
from mlplab.runs.snapshots import SnapshotSeries, load_series, series_from_callback
from mlplab.train.snapshots import STAT_NAMES, Snapshots

log = logging.getLogger(__name__)

METHOD_TITLES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}


@dataclass
class Dynamics:
    """Aligned maps and scores of every snapshot layer; shows itself in a notebook as the animation."""

    method: str
    series: SnapshotSeries
    layers: dict[str, LayerDynamics]
    val_accuracy: dict[int, float] = field(default_factory=dict)   # epoch -> validation accuracy (history)
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)       # write_dynamics: seconds per phase

    @property
    def epochs(self) -> list[int]:
        return self.series.epochs

    def coords(self, layer: str) -> np.ndarray:
        return self.layers[layer].coords

    def epoch_notes(self) -> list[str]:
        return [f"val accuracy {self.val_accuracy[e]:.1%}" if e in self.val_accuracy else "" for e in self.epochs]

    def summary_rows(self) -> list[list[str]]:
        rows = []
        for name, d in self.layers.items():
            rows.append([name, str(len(self.epochs)), f"{_f(d.knn_layer[0])} → {_f(d.knn_layer[-1])}",
                         f"{_f(d.knn_map[0])} → {_f(d.knn_map[-1])}", _f(d.trust[-1]),
                         _f(float(np.nanmean(d.disparity)) if len(d.disparity) > 1 else math.nan)])
        return rows

    def scores(self) -> dict:
        return {"method": self.method, "epochs": self.epochs, "layers": {
            name: {"procrustes_disparity": d.disparity.tolist(), "knn_accuracy_map": d.knn_map.tolist(),
                   "knn_accuracy_layer": d.knn_layer.tolist(), "trustworthiness": d.trust.tolist(),
                   "seconds": d.seconds, "params": d.params,
                   "stats": {s: self.series.stats[name][:, j].tolist() for j, s in enumerate(STAT_NAMES)}}
            for name, d in self.layers.items()}}

    def gif(self, **kw) -> bytes:
        from mlplab.viz.dynamics import dynamics_gif

        return dynamics_gif({n: d.coords for n, d in self.layers.items()}, self.epochs, self.series.labels,
                            len(self.series.class_names), epoch_notes=self.epoch_notes(), **kw)

    def _repr_html_(self) -> str:
        uri = "data:image/gif;base64," + base64.b64encode(self.gif(side=260)).decode("ascii")
        return (f"<div><img src='{uri}' alt='training dynamics'><p>{METHOD_TITLES[self.method]} maps of "
                f"{', '.join(self.layers)} over {len(self.epochs)} snapshots</p></div>")


def _f(v) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.3f}"


def dynamics(run_or_snapshots, method: str = "tsne", layers=None, *, seed: int = 0, labels=None,
             class_names=(), score: bool = True, **options) -> Dynamics:
    """Aligned maps of every snapshot: a run folder (path or Run), a SnapshotSeries, or a Snapshots callback
    used in fit() (then give `labels` of its inputs)."""
    if method not in ALIGNED_METHODS:
        raise MlplabError(f"unknown method {method!r}; choose one of: {', '.join(ALIGNED_METHODS)}")
    val_accuracy: dict[int, float] = {}
    if isinstance(run_or_snapshots, Snapshots):
        if labels is None:
            raise MlplabError("dynamics of a Snapshots callback needs labels= for its inputs")
        series = series_from_callback(run_or_snapshots, labels, class_names)
    elif isinstance(run_or_snapshots, SnapshotSeries):
        series = run_or_snapshots
    else:
        run = run_or_snapshots if hasattr(run_or_snapshots, "config") else open_run(run_or_snapshots)
        series = load_series(run.path)
        for row in run.history():
            if isinstance(row.get("val_accuracy"), float) and math.isfinite(row["val_accuracy"]):
                val_accuracy[int(row["epoch"])] = row["val_accuracy"]
    if isinstance(layers, str):
        layers = [layers]
    series = series.select(layers)
    return Dynamics(method, series, _map_layers(series, method, seed, score, options), val_accuracy)


def _map_layers(series: SnapshotSeries, method: str, seed: int, score: bool, options: dict) -> dict:
    """Every layer's aligned maps; t-SNE and PCA layers on a thread each (up to the cores this process may use):
    their work is compiled code that releases the GIL (the t-SNE kernel, PyTorch). AlignedUMAP's numba code
    mostly holds it, so UMAP layers run one after another."""
    from mlplab.inspect.embed import _n_jobs

    def one(name):
        return layer_dynamics(name, series.acts[name], series.labels, method=method, seed=seed, score=score,
                              **options)

    names = list(series.layers)
    cores = _n_jobs(options.get("n_jobs"))
    workers = min(len(names), cores) if method in ("tsne", "pca") else 1
    if workers <= 1:
        return {name: one(name) for name in names}
    import torch
    from concurrent.futures import ThreadPoolExecutor

    # the cores shared out between the layers: PyTorch's own threads on top of one thread per layer made
    # them wait for each other (a 256 x 256 eigensolve took 1.3 s instead of 4 ms on a loaded 2-core machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cores // workers))
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="mlplab-dynamics") as pool:
            return dict(zip(names, pool.map(one, names)))
    finally:
        torch.set_num_threads(threads)


def write_dynamics(run_path, method: str = "tsne", layers=None, *, seed: int = 0, gif: bool = True,
                   page: bool = True) -> Dynamics:
    """Compute the aligned maps of a run's snapshots and write the files listed in the module docstring."""
    from mlplab.viz.dynamics import dynamics_page, scores_json, separability_figure, stats_figure
    from mlplab.viz.figures import figure_bytes

    clock = _Clock()
    run = open_run(run_path)
    result = dynamics(run, method, layers, seed=seed)
    clock.lap("maps and scores")
    out = own_folder(run.path, "dynamics")
    series = result.series
    files = {}
    panels = {n: d.coords for n, d in result.layers.items()}
    files["maps"] = write_npz(out / f"maps-{method}.npz", {
        "epochs": np.asarray(series.epochs, dtype=np.int64), "labels": series.labels,
        **{f"coords.{n}": c for n, c in panels.items()}})
    title = METHOD_TITLES[method]
    fig = separability_figure(series.epochs, {n: d.knn_layer for n, d in result.layers.items()},
                              {n: d.knn_map for n, d in result.layers.items()}, result.val_accuracy, method=title)
    files["separability"] = atomic_write_bytes(out / "separability.png", figure_bytes(fig))
    files["stats"] = atomic_write_bytes(out / "stats.png", figure_bytes(stats_figure(series.epochs, series.stats,
                                                                                     STAT_NAMES)))
    clock.lap("curves")
    if gif:
        files["gif"] = atomic_write_bytes(out / "dynamics.gif", result.gif())
        clock.lap("gif")
    if page:
        thumbs, indices = _thumbnails(run, series)
        clock.lap("thumbnails")
        html = dynamics_page(panels, series.epochs, series.labels, series.class_names, predictions=series.preds,
                             thumbnails=thumbs, indices=indices, epoch_notes=result.epoch_notes(),
                             title=f"Training dynamics · {run.name}", method=title)
        files["page"] = atomic_write_text(out / "index.html", html)
        clock.lap("page")
    result.timings = clock.laps
    files["scores"] = atomic_write_text(out / "scores.json", scores_json({**result.scores(), "timings": clock.laps}))
    result.files = files
    return result


class _Clock:
    """Seconds per phase of write_dynamics (scores.json's "timings"; benchmarks/dynamics.py prints them)."""

    def __init__(self):
        import time

        self._time = time.perf_counter
        self._last = self._time()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = self._time()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


def _thumbnails(run, series: SnapshotSeries):
    """Thumbnails and dataset indices of the sampled points; none when the dataset cannot be loaded. The
    snapshots store the points' dataset indices, so the split is not drawn again (which needed scikit-learn,
    ~1.7 s of imports); series without them fall back to the run's split."""
    from mlplab.viz.thumbnails import thumbnail_uris

    n = len(series.labels)
    idx = series.indices
    try:
        if idx is not None and series.split in ("val", "test"):
            ds = run.dataset()
            images = ds.x_test if series.split == "test" else ds.x_train
            if len(idx) != n or (n and (idx.min() < 0 or idx.max() >= len(images))):
                return None, None
            return thumbnail_uris(images[idx]), idx
        split = run.split(series.split)
    except (MlplabError, OSError) as exc:
        log.info("no thumbnails: %s", exc)
        return None, None
    pos = series.positions
    if pos is None or len(pos) != n or (len(pos) and pos.max() >= len(split.y)):
        return None, None
    return thumbnail_uris(split.images[pos]), split.indices[pos]


def report_section(run) -> str | None:
    """The report's "Training dynamics" section body, from the files `mlplab dynamics` wrote; None without."""
    import json

    from mlplab.viz.dynamics import section_html

    folder = run.path / "dynamics"
    if not (folder / "scores.json").is_file():
        if (folder / "snapshots").is_dir():
            return section_html(gif=None, separability_png=None, stats_png=None,
                                note=f"This run has snapshots; draw them with: mlplab dynamics {run.path}")
        return None

    def read(name):
        p = folder / name
        return p.read_bytes() if p.is_file() and not p.is_symlink() else None

    rows = []
    try:
        scores = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
        n_epochs = len(scores["epochs"])
        for name, s in scores["layers"].items():
            disp = [v for v in s["procrustes_disparity"] if v is not None]
            rows.append([name, str(n_epochs),
                         f"{_f(_num(s['knn_accuracy_layer'][0]))} → {_f(_num(s['knn_accuracy_layer'][-1]))}",
                         f"{_f(_num(s['knn_accuracy_map'][0]))} → {_f(_num(s['knn_accuracy_map'][-1]))}",
                         _f(_num(s["trustworthiness"][-1])), _f(float(np.mean(disp)) if disp else math.nan)])
        method = METHOD_TITLES.get(scores.get("method"), "")
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        rows, method = [], ""
    return section_html(gif=read("dynamics.gif"), separability_png=read("separability.png"),
                        stats_png=read("stats.png"), rows=rows,
                        page_link="dynamics/index.html" if (folder / "index.html").is_file() else None,
                        note=f"{method} maps of the validation sample at every snapshot." if method else None)


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) else math.nan
