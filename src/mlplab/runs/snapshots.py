"""Snapshot storage in a run folder: RUN/dynamics/snapshots/.

    meta.json        format, the --snapshots spec, layers, split, class names, statistic names
    sample.npz       positions (into the split's arrays), labels, dataset indices of the sampled points
    epoch_NNN.npz    one file per captured epoch (000 = before training): act.<layer> float16 (N, units),
                     stats.<layer> float64 (len(STAT_NAMES),), pred int16 (N,), epoch int64

Each file is one atomic write. The training callback (train/snapshots.py) writes an epoch's file before the
run writer saves that epoch's checkpoint, so every epoch up to the checkpoint has its snapshot; a resume
discards the files past the checkpoint's epoch and the deterministic replay writes them again.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlplab.atomic import atomic_write_json, write_npz
from mlplab.errors import MlplabError
from mlplab.runs.folder import own_folder
from mlplab.train.snapshots import STAT_NAMES, Snapshots, SnapshotSpec

SNAPSHOT_FORMAT = "mlplab-snapshots/1"
_EPOCH_FILE = re.compile(r"^epoch_(\d{3,6})\.npz$")
_TEMP = re.compile(r"^\.(epoch_\d{3,6}\.npz|meta\.json|sample\.npz)\.[A-Za-z0-9_]{8}\.tmp$")


def snapshot_dir(run_path) -> Path:
    return own_folder(own_folder(Path(run_path), "dynamics"), "snapshots")


def _epoch_files(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    found = {}
    for p in folder.iterdir():
        m = _EPOCH_FILE.match(p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def discard_after(run_path, epoch: int) -> list[int]:
    """Remove snapshots of epochs after `epoch` (past the checkpoint a resume starts from) and temp files left
    by a killed write; return the epochs removed."""
    folder = snapshot_dir(run_path)
    removed = []
    for e, p in _epoch_files(folder).items():
        if e > epoch:
            p.unlink(missing_ok=True)
            removed.append(e)
    if folder.is_dir():
        for p in folder.iterdir():
            if _TEMP.match(p.name) and p.is_file():
                p.unlink(missing_ok=True)
    return removed


def snapshot_callback(run_path, spec_text: str, model, ds, *, val_split: float, seed: int,
                      class_names) -> Snapshots:
    """The training callback for a run: a seeded sample of the validation split (the test split when the run
    has none), with a sink that writes RUN/dynamics/snapshots/epoch_NNN.npz."""
    from mlplab.data import to_features
    from mlplab.train.trainer import validation_split_indices

    spec = SnapshotSpec.parse(spec_text)
    layers = spec.resolve_layers(model)
    if val_split > 0:
        _, idx = validation_split_indices(ds.y_train, val_split, seed)
        split, images, labels = "val", ds.x_train[idx], np.asarray(ds.y_train)[idx]
    else:
        idx = np.arange(len(ds.y_test))
        split, images, labels = "test", ds.x_test, np.asarray(ds.y_test)
    n = min(spec.n, len(idx))
    positions = np.arange(len(idx)) if n == len(idx) else np.sort(
        np.random.default_rng(seed).choice(len(idx), size=n, replace=False))
    folder = snapshot_dir(run_path)
    labels = np.asarray(labels)
    class_idx = labels if labels.ndim == 1 else labels.argmax(1)
    write_npz(folder / "sample.npz", {"positions": positions.astype(np.int64),
                                      "labels": class_idx[positions].astype(np.int64),
                                      "indices": np.asarray(idx)[positions].astype(np.int64)})
    atomic_write_json(folder / "meta.json", {
        "format": SNAPSHOT_FORMAT, "spec": spec.text(), "every": spec.every, "layers": layers, "split": split,
        "n": int(n), "requested_n": spec.n, "stats": list(STAT_NAMES), "class_names": [str(c) for c in class_names],
        "seed": int(seed)})

    def sink(epoch: int, arrays: dict) -> None:
        write_npz(folder / f"epoch_{epoch:03d}.npz", arrays)

    return Snapshots(to_features(images[positions]), layers, every=spec.every, sink=sink)


@dataclass
class SnapshotSeries:
    """Snapshots as arrays: what `mlplab.dynamics` maps. Built from a run folder or from a Snapshots callback."""

    epochs: list[int]
    layers: list[str]
    acts: dict[str, list[np.ndarray]]          # layer -> one float16/float32 (N, units) per epoch
    stats: dict[str, np.ndarray]               # layer -> float64 (E, len(STAT_NAMES))
    labels: np.ndarray                         # int64 (N,)
    preds: np.ndarray | None = None            # int (E, N), the model's predicted class at each epoch
    class_names: list[str] = field(default_factory=list)
    split: str = ""
    positions: np.ndarray | None = None        # into the split's arrays
    source: str = ""                           # the folder they came from, for messages
    indices: np.ndarray | None = None          # into the dataset's train (val split) or test arrays: thumbnails

    def select(self, layers) -> "SnapshotSeries":
        if not layers:
            return self
        wanted = list(dict.fromkeys(layers))
        unknown = [n for n in wanted if n not in self.layers]
        if unknown:
            raise MlplabError(f"unknown layer {unknown[0]!r}; the snapshots have: {', '.join(self.layers)}")
        return SnapshotSeries(self.epochs, wanted, {n: self.acts[n] for n in wanted},
                              {n: self.stats[n] for n in wanted}, self.labels, self.preds, self.class_names,
                              self.split, self.positions, self.source, self.indices)


def series_from_callback(callback: Snapshots, labels, class_names=()) -> SnapshotSeries:
    """An in-memory series (a Snapshots callback used without a sink, e.g. in a notebook)."""
    if not callback.series:
        raise MlplabError("the Snapshots callback holds no snapshots yet; pass it to fit(callbacks=[...]) first")
    labels = np.asarray(labels)
    labels = labels if labels.ndim == 1 else labels.argmax(1)
    if len(labels) != len(callback.x):
        raise MlplabError(f"labels has {len(labels)} entries but the snapshots hold {len(callback.x)} samples")
    rows = sorted(callback.series, key=lambda a: int(a["epoch"]))
    names = list(class_names) or [str(i) for i in range(int(labels.max(initial=0)) + 1)]
    return SnapshotSeries(
        epochs=[int(a["epoch"]) for a in rows], layers=list(callback.layers),
        acts={n: [a[f"act.{n}"] for a in rows] for n in callback.layers},
        stats={n: np.stack([a[f"stats.{n}"] for a in rows]) for n in callback.layers},
        labels=labels.astype(np.int64), preds=np.stack([a["pred"] for a in rows]), class_names=names,
        source="memory")


def load_series(run_path) -> SnapshotSeries:
    """Read and check every snapshot of a run; one MlplabError line for a missing or damaged part."""
    run_path = Path(run_path)
    folder = snapshot_dir(run_path)
    meta_path = folder / "meta.json"
    files = _epoch_files(folder)
    if not meta_path.exists() or not files:
        raise MlplabError(f"run {run_path} has no snapshots ({folder} is missing or empty); train it with "
                          f"--snapshots default (or every=N,layers=NAME+NAME|all,n=N)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        layers = [str(n) for n in meta["layers"]]
        class_names = [str(c) for c in meta.get("class_names", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MlplabError(f"snapshot file {meta_path} is damaged ({type(exc).__name__}); train the run again "
                          f"with --overwrite") from None
    sample = _load_npz(folder / "sample.npz", ("positions", "labels"), optional=("indices",))
    labels = sample["labels"]
    n = len(labels)
    if labels.ndim != 1 or n < 1:
        raise MlplabError(f"snapshot file {folder / 'sample.npz'} is damaged (labels have shape {labels.shape})")
    acts: dict[str, list] = {name: [] for name in layers}
    stats: dict[str, list] = {name: [] for name in layers}
    preds, epochs = [], []
    width: dict[str, int] = {}
    for epoch, path in files.items():
        arrays = _load_npz(path, ["pred", "epoch"] + [f"{k}.{n}" for n in layers for k in ("act", "stats")])
        if int(arrays["epoch"]) != epoch:
            raise MlplabError(f"snapshot file {path} is damaged (it says epoch {int(arrays['epoch'])})")
        for name in layers:
            a, s = arrays[f"act.{name}"], arrays[f"stats.{name}"]
            if a.ndim != 2 or a.shape[0] != n or a.shape[1] != width.setdefault(name, a.shape[1]) \
                    or a.dtype.kind != "f" or s.shape != (len(STAT_NAMES),):
                raise MlplabError(f"snapshot file {path} is damaged ({name} has shape {a.shape}, expected "
                                  f"({n}, {width[name]}))")
            if not np.isfinite(a).all():
                raise MlplabError(f"snapshot file {path} holds NaN or infinite activations in {name} "
                                  f"(did training diverge?)")
            acts[name].append(a)
            stats[name].append(s.astype(np.float64))
        if arrays["pred"].shape != (n,):
            raise MlplabError(f"snapshot file {path} is damaged (pred has shape {arrays['pred'].shape})")
        preds.append(arrays["pred"])
        epochs.append(epoch)
    return SnapshotSeries(epochs=epochs, layers=layers, acts=acts, stats={k: np.stack(v) for k, v in stats.items()},
                          labels=labels.astype(np.int64), preds=np.stack(preds).astype(np.int64),
                          class_names=class_names, split=str(meta.get("split", "")), positions=sample["positions"],
                          source=str(folder), indices=sample.get("indices"))


def _load_npz(path: Path, keys, optional=()) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise MlplabError(f"snapshot file {path} is damaged (no {missing[0]!r} in it)")
            return {k: np.asarray(z[k]) for k in [*keys, *optional] if k in z.files}
    except MlplabError:
        raise
    except FileNotFoundError:
        raise MlplabError(f"snapshot file {path} is missing; train the run again with --overwrite") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise MlplabError(f"snapshot file {path} is damaged ({reason}); train the run again with --overwrite") from None
