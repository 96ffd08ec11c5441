"""The run writer: a training callback that fills a run directory as training goes, so that a killed process
leaves a loadable run (as Keras's CSVLogger, ModelCheckpoint and BackupAndRestore are callbacks).

Order at the end of each epoch: the full training state (checkpoints/last.safetensors) first, then
history.csv, then model.safetensors. Each is one atomic rename. If the process dies between two of them,
resuming reads the checkpoint (which carries its own history) and rewrites the rest.
"""

from __future__ import annotations

import json
import math
import platform
import re
import shutil
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

from mlplab.atomic import atomic_write_json, atomic_write_text
from mlplab.errors import MlplabError, Terminated
from mlplab.runs.folder import RUN_FORMAT, format_history_csv, own_folder
from mlplab.runs.checkpoint import save_training_state, save_weights
from mlplab.runs.lock import LOCK_NAME, run_lock
from mlplab.train.callbacks import Callback

# what a run directory may contain: --overwrite removes only these, never unknown files
RUN_ENTRIES = ("config.json", "model.safetensors", "history.csv", "metrics.json", "summary.txt", "manifest.json",
               "checkpoints", "plots", "embeddings", "dynamics", "report.html", "mlflow.json")


# mlplab.atomic's temporary files: ".<final name>.<8 random characters>.tmp"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def remove_temp_leftovers(path: Path) -> list[Path]:
    """Delete the temporary files that a killed process left behind in a run directory and its checkpoints/.

    Readers never look at them (they are not under a final name), but each one can be as large as a
    checkpoint, and every kill -9 during a write adds one. Only names of files the run writer itself writes
    are removed, and only when nothing is training in the folder (before training starts or resumes).
    """
    removed = []
    for folder in (path, path / "checkpoints"):
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for p in entries:
            if _is_our_temp(p):
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


def _is_our_temp(p: Path) -> bool:
    m = _TEMP_NAME.match(p.name)
    return bool(m) and m["name"] in RUN_ENTRIES + ("last.safetensors", "best.safetensors", "best.json") \
        and p.is_file() and not p.is_symlink()


def _entries(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.name != LOCK_NAME]  # the writer lock (runs/lock.py) is ours


def check_run_dir(path: Path, *, overwrite: bool) -> None:
    """Refuse an --out that is a file, a folder that is not a run, or an existing run without --overwrite.
    Changes nothing, so it can run before the folder's lock is taken (and before the lock file is created)."""
    if path.exists() and not path.is_dir():
        raise MlplabError(f"--out {path} is a file; give a folder for the run")
    if not path.is_dir():
        return
    entries = _entries(path)
    if entries and not (path / "config.json").exists() and not all(_is_our_temp(p) for p in entries):
        raise MlplabError(f"--out {path} is a non-empty folder that is not an mlplab run; choose another --out")
    if (path / "config.json").exists() and not overwrite:
        raise MlplabError(f"run {path} already exists; continue it with --resume {path} "
                          f"or replace it with --overwrite")


def prepare_run_dir(path: Path, *, overwrite: bool) -> None:
    """Create a fresh run directory, refusing to clobber anything that is not ours. The caller holds the
    folder's lock (runs/lock.py), so --overwrite never deletes a run another process is writing."""
    check_run_dir(path, overwrite=overwrite)
    with run_lock(path, "overwrite", create=True):  # re-entrant: a no-op when the caller holds it already
        _clear_run_dir(path)


def _clear_run_dir(path: Path) -> None:
    if not (path / "config.json").exists():
        remove_temp_leftovers(path)  # a process killed while writing the first config.json left only this
    if _entries(path):
        remove_temp_leftovers(path)
        for name in RUN_ENTRIES:
            target = path / name
            try:
                if target.is_symlink():
                    target.unlink()  # a link (say plots/ -> elsewhere) goes, never what it points to
                elif target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            except OSError as exc:
                raise MlplabError(f"cannot remove {target} to overwrite the run: {exc.strerror or exc}") from exc
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MlplabError(f"cannot create run directory {path}: {exc.strerror or exc}") from exc


def environment() -> dict:
    import numpy
    import torch

    import mlplab
    from mlplab.model import kernels

    return {
        "mlplab": mlplab.__version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "platform": platform.platform(), "processor": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_kernels": kernels.status(),  # the engine's element-wise path on the CPU (model/kernels.py)
    }


def _bf16_gemm(trainer) -> dict:
    """The compiled bf16 step's GEMM ({"bf16_gemm": "mlplab AVX512-BF16"} or MKL): bf16 results depend on it."""
    if getattr(trainer, "engine_route", None) != "c-step-bf16":
        return {}
    import torch

    from mlplab.model import kernels

    loaded = kernels.get()
    k = loaded.get(torch.float32) if loaded else None
    return {"bf16_gemm": k.gemm_bf16_name} if k is not None else {}


class RunWriter(Callback):
    """Writes the run folder at the start, after each epoch, on interrupt and at the end.

    It must be the last callback of a fit: it saves what the others decided (EarlyStopping's state, restored
    best weights) after they ran.
    """

    def __init__(self, path, config: dict, *, monitor: str, mode: str):
        self.path = Path(path)
        self.config = config
        self.monitor = monitor
        self.mode = mode
        self.best_value: float | None = None
        self.started = time.time()
        self.manifest: dict = {}

    @property
    def checkpoints(self) -> Path:
        return own_folder(self.path, "checkpoints")

    def write_static(self, summary_text: str) -> None:
        atomic_write_json(self.path / "config.json", self.config)
        atomic_write_text(self.path / "summary.txt", summary_text)

    def on_train_begin(self, trainer) -> None:
        existing = self._read_manifest()
        self.manifest = {
            "format": RUN_FORMAT,
            "created": existing.get("created") or _now(),
            "seed": trainer.seed,
            "device": str(trainer.device),
            "environment": {**environment(), "engine_route": getattr(trainer, "engine_route", None),
                            "precision": getattr(trainer, "precision", "fp32"), **_bf16_gemm(trainer)},
            "sessions": existing.get("sessions", []) + [{"started": _now(), "from_epoch": trainer.history.epochs_done}],
            "status": "training",
        }
        atomic_write_json(self.path / "manifest.json", self.manifest)
        rows = [r for r in trainer.history.rows if not _isnan(r.get(self.monitor))]
        if rows:  # a resumed run keeps judging "best" against what it already had
            values = [r[self.monitor] for r in rows]
            self.best_value = min(values) if self.mode == "min" else max(values)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        row = trainer.history.rows[-1]
        meta = {
            "epoch": int(row["epoch"]),
            "history": trainer.history.rows,
            "callbacks": trainer.callback_state(),
            "best_value": self.best_value,
        }
        extra = trainer.callback_tensors()
        improved = self._improved(row.get(self.monitor))
        if improved:
            self.best_value = row[self.monitor]
            meta["best_value"] = self.best_value
        save_training_state(self.checkpoints / "last.safetensors", model=trainer.model, optimizer=trainer.optimizer,
                            rng=trainer.rng_state(), extra_tensors=extra, meta=meta)
        atomic_write_text(self.path / "history.csv", format_history_csv(trainer.history.rows))
        save_weights(trainer.model, self.path / "model.safetensors")
        if improved:
            save_weights(trainer.model, self.checkpoints / "best.safetensors")
            atomic_write_json(self.checkpoints / "best.json", {"epoch": int(row["epoch"]), "monitor": self.monitor,
                                                               "value": self.best_value})

    def on_interrupt(self, trainer) -> None:
        # Keep what was learned in the unfinished epoch; the resumable state stays at the last whole epoch.
        save_weights(trainer.model, self.path / "model.safetensors")
        status, fields = stop_status(getattr(trainer, "stop_signal", None))
        self._finish_manifest(trainer, status, **fields)

    def on_train_end(self, trainer) -> None:
        # history.csv again: a run finished on resume (killed between its last checkpoint and history.csv) has
        # the last epoch only in the checkpoint
        atomic_write_text(self.path / "history.csv", format_history_csv(trainer.history.rows))
        save_weights(trainer.model, self.path / "model.safetensors")  # after restore_best_weights, if any
        status = ("terminated on NaN" if trainer.history.terminated_on_nan
                  else "stopped early" if trainer.history.stopped_early_at else "finished")
        self._finish_manifest(trainer, status)

    def on_diverged(self, trainer) -> None:
        """Training stopped on a NaN/inf loss: the files stay at the last good epoch; the manifest says why."""
        self._finish_manifest(trainer, "diverged")

    def on_abort(self, trainer, exc: BaseException) -> None:
        """Training ended by an exception (a second Ctrl-C, SIGTERM outside a batch, a full disk, a bug): the
        files stay at the last whole epoch; the manifest says how the run ended instead of "training"."""
        if isinstance(exc, (KeyboardInterrupt, Terminated)):
            status, fields = stop_status(getattr(exc, "signum", signal.SIGINT))
        else:
            status, fields = "failed", {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]}
        self._finish_manifest(trainer, status, **fields)

    def _finish_manifest(self, trainer, status: str, **fields) -> None:
        rows = trainer.history.rows
        self.manifest.pop("signal", None)
        self.manifest.pop("error", None)
        self.manifest.update(fields)
        self.manifest.update(status=status, epochs=trainer.history.epochs_done,
                             train_seconds=sum(r["seconds"] for r in rows),
                             stopped_early_at=trainer.history.stopped_early_at,
                             restored_best_epoch=trainer.history.restored_epoch,
                             finished=_now())
        atomic_write_json(self.path / "manifest.json", self.manifest)

    def update_manifest(self, **fields) -> None:
        self.manifest.update(fields)
        atomic_write_json(self.path / "manifest.json", self.manifest)

    def _improved(self, value) -> bool:
        if _isnan(value):
            return False
        if self.best_value is None:
            return True
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def _read_manifest(self) -> dict:
        try:
            manifest = json.loads((self.path / "manifest.json").read_text())
        except (OSError, ValueError):
            return {}
        return manifest if isinstance(manifest, dict) else {}  # informational: a corrupt one starts afresh


# How a run can end, as manifest.json's "status" records it ("training" while a process is at work):
RUN_STATUSES = ("finished", "stopped early", "interrupted", "terminated", "diverged", "failed")


def stop_status(signum: int | None) -> tuple[str, dict]:
    """(status, extra manifest fields) for a run stopped by a signal: Ctrl-C (or a library request_stop())
    is "interrupted"; SIGTERM and SIGHUP are "terminated", with the signal's name."""
    if signum is None or signum == signal.SIGINT:
        return "interrupted", {"signal": "SIGINT"} if signum else {}
    return "terminated", {"signal": signal.Signals(signum).name}


def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
