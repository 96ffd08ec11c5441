"""The run directory: one folder per training run, readable without the code that wrote it.

Layout (a contract other tools rely on; README, "The run directory"):
    config.json          everything needed to rebuild the model, reload the data and resume
    model.safetensors    the model's weights (Keras-order names are not needed: torch state_dict keys)
    history.csv          epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds
    metrics.json         test metrics, written once after training (and by `mlplab evaluate`)
    summary.txt          the Keras-style summary table
    manifest.json        versions, seed, device, threads, timings
    checkpoints/         last.safetensors (full training state, for --resume), best.safetensors
    plots/ embeddings/ report.html

Nothing here unpickles: weights and optimizer state are safetensors, the rest is JSON and CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from mlplab.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)
from mlplab.errors import MlplabError
from mlplab.train.history import HISTORY_COLUMNS, History

RUN_FORMAT = "mlplab-run/1"
SPLITS = ("train", "val", "test")


@dataclass
class SplitData:
    images: np.ndarray   # the raw samples as the Dataset holds them (thumbnails, galleries)
    x: np.ndarray        # float32 (N, D) model inputs: to_features(images)
    y: np.ndarray        # int64 (N,) labels
    indices: np.ndarray  # positions in the dataset's train (train/val) or test arrays


def format_history_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for row in rows:
        cells = []
        for col in HISTORY_COLUMNS:
            value = row.get(col)
            if col == "epoch":
                cells.append(str(int(value)))
            elif value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("")
            else:
                cells.append(repr(float(value)))  # repr round-trips a float exactly
        writer.writerow(cells)
    return out.getvalue()


def parse_history_csv(text: str, where: str = "history.csv") -> list[dict]:
    """Rows of a history.csv; one MlplabError line for a wrong header, a bad cell or a repeated/out-of-order epoch.

    A leading byte-order mark is dropped: spreadsheet programs add one when they save CSV as UTF-8.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    header = next(reader, None)
    if header != HISTORY_COLUMNS:
        raise MlplabError(f"{where}: header must be {','.join(HISTORY_COLUMNS)}, found {','.join(header or [])!r}")
    rows = []
    for lineno, cells in enumerate(reader, start=2):
        if len(cells) != len(HISTORY_COLUMNS):
            raise MlplabError(f"{where}: line {lineno} has {len(cells)} fields, expected {len(HISTORY_COLUMNS)}")
        try:
            row = {"epoch": int(cells[0])}
            for col, cell in zip(HISTORY_COLUMNS[1:], cells[1:]):
                row[col] = float(cell) if cell != "" else float("nan")
        except ValueError as exc:
            raise MlplabError(f"{where}: line {lineno} is not numeric ({exc})") from exc
        # Epochs must rise: a repeated or out-of-order row would make the curves fold back and epochs_done
        # (the last row's epoch) wrong for a resume.
        if not rows and row["epoch"] < 1:
            raise MlplabError(f"{where}: line {lineno}: epoch {row['epoch']} is below 1; epochs count from 1")
        if rows and row["epoch"] <= rows[-1]["epoch"]:
            previous = rows[-1]["epoch"]
            what = "repeats" if row["epoch"] == previous else "comes after"
            raise MlplabError(f"{where}: line {lineno}: epoch {row['epoch']} {what} epoch {previous}; "
                              f"epochs must increase, one row each")
        rows.append(row)
    return rows


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a BOM an editor added is not an error
    except FileNotFoundError:
        raise MlplabError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MlplabError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise MlplabError(f"{path} must hold a JSON object")
    return obj


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# (section, key, required, check, what it must be): config.json is input like any other file, so the values
# the readers use are checked here, where it enters, instead of failing later with a TypeError.
_CONFIG_FIELDS = [
    ("data", "name", True, lambda v: isinstance(v, str) and v != "", "a dataset name or path"),
    ("data", "val_split", False, lambda v: v is None or (_is_number(v) and 0 <= v < 1), "a number in [0, 1)"),
    ("data", "input_shape", False, lambda v: v is None or (isinstance(v, list) and all(_is_int(d) and d > 0 for d in v)),
     "a list of sizes"),
    ("data", "n_classes", False, lambda v: _is_int(v) and 0 <= v <= 10_000, "a whole number of classes"),
    ("data", "class_names", False, lambda v: v is None or (isinstance(v, list) and all(isinstance(n, str) for n in v)),
     "a list of strings"),
    ("data", "load_options", False, lambda v: isinstance(v, dict) and set(v) <= {"test_fraction", "seed"}
     and _is_number(v.get("test_fraction", 0.2)) and 0 < v.get("test_fraction", 0.2) < 1
     and _is_int(v.get("seed", 0)) and v.get("seed", 0) >= 0, "a table with test_fraction in (0, 1) and seed"),
    ("model", "spec", True, lambda v: isinstance(v, str), "a model spec string"),
    ("model", "input_dim", True, lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    ("model", "init", False, lambda v: isinstance(v, str), "an initializer name"),
    ("train", "seed", True, lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
]


def _check_config(config: dict, where: Path) -> None:
    problems = []
    for section in ("data", "model", "train"):
        if not isinstance(config.get(section), dict):
            problems.append(f"missing section {section!r}")
    for section, key, required, ok, what in _CONFIG_FIELDS:
        part = config.get(section)
        if not isinstance(part, dict):
            continue
        if key not in part:
            if required:
                problems.append(f"missing {section}.{key}")
        elif not ok(part[key]):
            problems.append(f"{section}.{key} must be {what} (found {json.dumps(part[key])[:60]})")
    if problems:
        raise MlplabError(f"{where} is not an mlplab run config: {'; '.join(problems)}")


def own_folder(run_path: Path, name: str) -> Path:
    """RUN/<name>, refusing a symlink: outputs go inside the run directory, never through a link to elsewhere."""
    folder = Path(run_path) / name
    if folder.is_symlink():
        raise MlplabError(f"{folder} is a symlink (to {os.readlink(folder)}); mlplab writes only inside the run "
                          f"directory and does not follow it: remove the link or make {name}/ a real folder")
    return folder


class Run:
    """A run directory on disk. Cheap to open; each part is read when asked for."""

    def __init__(self, path: Path, config: dict):
        self.path = path
        self.config = config

    # --- plain files -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def class_names(self) -> list[str]:
        names = self.config["data"].get("class_names")
        if names:
            return [str(n) for n in names]
        return [str(i) for i in range(int(self.config["data"].get("n_classes", 0)))]

    @property
    def plots_dir(self) -> Path:
        return own_folder(self.path, "plots")

    @property
    def embeddings_dir(self) -> Path:
        return own_folder(self.path, "embeddings")

    @property
    def weights_path(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def history(self) -> History:
        """The run's History (as `fit` returns it): rows from history.csv, early-stopping epochs from the manifest."""
        path = self.path / "history.csv"
        if not path.exists():
            return History()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MlplabError(f"cannot read {path}: {exc}") from exc
        history = History(parse_history_csv(text, str(path)))
        try:
            manifest = self.manifest() or {}
        except MlplabError:  # the manifest is informational: the epochs are still worth reading
            manifest = {}
        for attr, key in (("stopped_early_at", "stopped_early_at"), ("restored_epoch", "restored_best_epoch")):
            if _is_int(manifest.get(key)) and manifest[key] > 0:
                setattr(history, attr, manifest[key])
        history.interrupted = manifest.get("status") == "interrupted"
        return history

    def metrics(self):
        """metrics.json as Metrics (a dict that shows itself as a table in a notebook), or None."""
        from mlplab.train.metrics import Metrics

        path = self.path / "metrics.json"
        return Metrics(_read_json(path)) if path.exists() else None

    def manifest(self) -> dict | None:
        path = self.path / "manifest.json"
        return _read_json(path) if path.exists() else None

    def summary_text(self) -> str | None:
        path = self.path / "summary.txt"
        if not path.exists():
            return None
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MlplabError(f"cannot read {path}: {exc}") from exc

    # --- display ------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        rows, metrics = self.history().rows, self.metrics()
        acc = f", test accuracy {metrics['test_accuracy']:.4f}" if metrics else ""
        return f"Run({str(self.path)!r}: {self.config['model']['spec']}, {len(rows)} epochs{acc})"

    def _repr_html_(self) -> str:
        from mlplab.runs.api import run_html

        return run_html(self)

    # --- model and data ------------------------------------------------------------------------------
    def model(self, device: str = "cpu"):
        from mlplab.model import build
        from mlplab.runs.checkpoint import load_weights

        m = self.config["model"]
        model = build(m["spec"], int(m["input_dim"]), init=m.get("init", "glorot_uniform"))
        load_weights(model, self.weights_path)
        return model.to(device)

    @cached_property
    def _dataset(self):
        from mlplab.data import load_dataset

        data = self.config["data"]
        return load_dataset(data["name"], **data.get("load_options", {}))

    def dataset(self):
        return self._dataset

    def split_indices(self, name: str) -> np.ndarray:
        """Positions of a split's samples: train/val index the dataset's train arrays, test its test arrays."""
        from mlplab.train.trainer import validation_split_indices

        if name not in SPLITS:
            raise MlplabError(f"unknown split {name!r}; choose one of: {', '.join(SPLITS)}")
        ds = self._dataset
        if name == "test":
            return np.arange(len(ds.y_test), dtype=np.int64)
        val_split = float(self.config["data"].get("val_split") or 0.0)
        if val_split <= 0:
            if name == "val":
                raise MlplabError(f"run {self.path} was trained without a validation split; use --split train or test")
            return np.arange(len(ds.y_train), dtype=np.int64)
        # the seed that the session hands to fit() as split_seed (runs/session.py)
        train_idx, val_idx = validation_split_indices(ds.y_train, val_split, int(self.config["train"]["seed"]))
        return train_idx if name == "train" else val_idx

    def split(self, name: str) -> SplitData:
        from mlplab.data import to_features

        idx = self.split_indices(name)
        ds = self._dataset
        images = ds.x_test if name == "test" else ds.x_train
        labels = ds.y_test if name == "test" else ds.y_train
        images = images[idx]
        return SplitData(images=images, x=to_features(images), y=np.asarray(labels[idx], dtype=np.int64), indices=idx)


def open_run(path) -> Run:
    """Open an existing run directory; MlplabError if it is missing, not a run, or its config is corrupt."""
    path = Path(path)
    if not path.exists():
        raise MlplabError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise MlplabError(f"{path} is not a run directory (it is a file)")
    config_path = path / "config.json"
    if not config_path.exists():
        raise MlplabError(f"{path} is not an mlplab run: config.json is missing")
    config = _read_json(config_path)
    _check_config(config, config_path)
    return Run(path, config)
