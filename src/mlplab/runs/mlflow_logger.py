"""MLflow logging: a training callback that records a run's parameters, tags, per-epoch metrics, files
and the model (an MLflow pyfunc model, see mlflow_pyfunc.py) in a tracking store.

Training never waits for the tracking server. The callback only appends to a queue; one background thread
sends the queue in order through MlflowClient (each HTTP request bounded by `request_timeout`, no retries
inside MLflow). When the server is down or refuses, the thread keeps the queue and retries every few
seconds, so a server that comes back is caught up. At the end `close()` waits while the queue still drains
and gives up after `timeout` seconds without progress; the run folder is complete either way, and one
warning line (in `warnings` and on the `mlplab` logger) says what failed and what was dropped.

A run folder records its MLflow run in RUN/mlflow.json (the run id per tracking store, written when the run
is created). A resumed run folder continues that MLflow run: its metric history gets only the epochs it does
not have yet, its parameters keep their first values (MLflow refuses to change one; a value the resume
changed, such as `epochs`, goes into the tag `mlplab.resumed.<name>`), and its status goes back to RUNNING.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from mlplab.errors import MlplabError
from mlplab.train.callbacks import Callback

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'mlplab[mlflow]'"
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")
# run-folder files logged as artifacts (the checkpoints are not: the model goes in as an MLflow model)
ARTIFACT_FILES = ("config.json", "summary.txt", "history.csv", "metrics.json", "manifest.json", "report.html")
ARTIFACT_FOLDERS = {"plots": (".png", ".svg", ".html"), "embeddings": (".png", ".html")}
RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0)  # back-off between retries while the server does not answer
RECORD_FILE = "mlflow.json"  # in a run folder: the MLflow run it logs to, per tracking store
RECORD_FORMAT = "mlplab-mlflow/1"


def _describe(exc: BaseException) -> str:
    """The reason a request failed, short: MLflow's messages carry the whole urllib3 retry story."""
    text = " ".join(str(exc).split())
    if "Connection refused" in text or "NewConnectionError" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "no answer in time"
    if "Connection aborted" in text or "RemoteDisconnected" in text:
        return "connection dropped"
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def absolute_uri(uri: str) -> str:
    """The tracking URI, independent of the working folder: a relative SQLite path (the default
    sqlite:///mlruns.db) made absolute, a server's address without a trailing slash; others unchanged."""
    if uri.startswith("sqlite:///"):
        path, sep, query = uri[len("sqlite:///"):].partition("?")
        if path and not path.startswith("/") and path != ":memory:":
            return f"sqlite:///{Path(path).resolve()}{sep}{query}"
        return uri
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return uri


def _read_record(run_folder) -> list[dict]:
    try:
        doc = json.loads((Path(run_folder) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or damaged: a new MLflow run is started and recorded
        return []
    runs = doc.get("runs") if isinstance(doc, dict) and doc.get("format") == RECORD_FORMAT else None
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def recorded_run(run_folder, tracking_uri: str) -> str | None:
    """The id of the MLflow run that the run folder logged to in this tracking store, if it did."""
    key = absolute_uri(tracking_uri)
    for entry in _read_record(run_folder):
        if entry.get("tracking_uri") == key and isinstance(entry.get("run_id"), str) and entry["run_id"]:
            return entry["run_id"]
    return None


def installed(package: str) -> bool:
    """Whether `package` can be imported, without importing it (mlflow takes seconds to import)."""
    if package in sys.modules:
        return sys.modules[package] is not None  # None: imports of it are blocked
    return importlib.util.find_spec(package) is not None


class MLflowLogger(Callback):
    """Log a fit to MLflow: `MLflowLogger()` uses the local SQLite store sqlite:///mlruns.db; give
    `tracking_uri` for a server (http://host:port) or another store. `params`/`tags` add to what the
    trainer knows; `log_model=False` skips the model. `run_id` continues that run (a resumed run folder's,
    from RUN/mlflow.json); otherwise it is set once a new run exists in the store."""

    def __init__(self, tracking_uri: str | None = None, *, experiment: str = "mlplab", run_name: str | None = None,
                 params: dict | None = None, tags: dict | None = None, log_model: bool = True,
                 timeout: float = 15.0, request_timeout: int = 5, run_id: str | None = None):
        from mlplab.train.options import MLFLOW_DEFAULT_URI

        if not installed("mlflow"):
            raise MlplabError(f"MLflow logging needs the mlflow package: {INSTALL_HINT}")
        if not (isinstance(timeout, (int, float)) and timeout >= 0):
            raise MlplabError(f"MLflowLogger timeout must be a number of seconds >= 0 (got {timeout!r})")
        if run_id is not None and not (isinstance(run_id, str) and run_id.strip()):
            raise MlplabError(f"MLflowLogger run_id must be an MLflow run id (got {run_id!r})")
        # absolute: the store stays the same file whatever the working folder is when the thread opens it
        self.tracking_uri = absolute_uri(tracking_uri or MLFLOW_DEFAULT_URI)
        self.experiment = experiment
        self.run_name = run_name
        self.params = dict(params or {})
        self.tags = dict(tags or {})
        self.log_model = log_model
        self.timeout = float(timeout)
        self.request_timeout = int(request_timeout)
        self.run_id: str | None = run_id
        self.warnings: list[str] = []
        self.dropped: list[str] = []
        self.run_folder: Path | None = None  # see attach_run
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._abandoned = False
        self._failure: tuple[str, str] | None = None  # (when, why) of the first failed request
        self._last_progress = time.monotonic()
        self._staging = None
        self._step = 0
        self._logged: dict[str, set] = {}  # metric -> steps the run already has (a continued run)

    def attach_run(self, path) -> None:
        """Called by the run session before fit: the MLflow run then ends with on_run_complete (test metrics,
        the run folder's files, the model from model.safetensors) instead of at the end of training."""
        self.run_folder = Path(path)

    # --- the callback side (training thread): only appends -------------------------------------------------
    def on_train_begin(self, trainer) -> None:
        from mlplab.runs.writer import environment

        env = environment()
        params = {"optimizer": type(trainer.optimizer).__name__.lower(), "lr": trainer.lr,
                  "batch_size": trainer.batch_size, "loss": trainer.loss, "seed": trainer.seed,
                  "schedule": trainer.schedule_name, "model": trainer.model.spec,
                  "input_dim": trainer.model.input_dim}
        params.update(self.params)
        tags = {"mlplab.seed": str(trainer.seed), "mlplab.device": str(trainer.device),
                **{f"mlplab.version.{k}": str(env[k]) for k in ("mlplab", "torch", "numpy", "python")}}
        if self.run_folder is not None:
            tags["mlplab.run_folder"] = str(Path(self.run_folder).resolve())
        tags.update({k: str(v) for k, v in self.tags.items()})
        self._start_thread()
        self._step = trainer.history.epochs_done
        self._put(("start", {k: _param(v) for k, v in params.items()}, tags, trainer.history.epochs_done))
        if trainer.history.rows:
            # the epochs before this fit (a resumed run, a second fit): a run that has them already skips
            # them, a new one (the first logged part, or its run deleted) gets the whole history
            stamp = int(time.time() * 1000)
            self._put(("history", [(int(row["epoch"]), _metric_values(row)) for row in trainer.history.rows], stamp))

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        self._step = epoch + 1
        self._put(("metrics", _metric_values(logs), epoch + 1, int(time.time() * 1000)))

    def on_train_end(self, trainer) -> None:
        if self.run_folder is not None:
            return  # the session calls on_run_complete after the test evaluation, with the finished folder
        if self.log_model:
            from mlplab.runs.checkpoint import save_weights

            from mlplab.atomic import atomic_write_json

            staging = self._stage()
            save_weights(trainer.model, staging / "data" / "model.safetensors")
            atomic_write_json(staging / "data" / "config.json", {"model": {"spec": trainer.model.spec, "init": trainer.model.init,
                                                                  "input_dim": trainer.model.input_dim}})
            self._put(("model", staging))
        self._put(("end", "FINISHED"))
        self.close()

    def on_interrupt(self, trainer) -> None:
        self._put(("end", "KILLED"))
        self.close()

    def on_run_failed(self, trainer) -> None:
        """The run session's step when training stopped on an error (a diverged loss)."""
        self._put(("end", "FAILED"))
        self.close()

    def on_run_complete(self, path, metrics: dict | None) -> None:
        """The run session's last step: test metrics, the run folder's files and the model, then the end."""
        path = Path(path)
        if metrics:
            step = self._step
            values = {k: float(metrics[k]) for k in ("test_loss", "test_accuracy", "macro_f1") if k in metrics}
            self._put(("metrics", values, step, int(time.time() * 1000)))
        files = [(path / name, "") for name in ARTIFACT_FILES if (path / name).is_file()]
        for folder, suffixes in ARTIFACT_FOLDERS.items():
            if (path / folder).is_dir() and not (path / folder).is_symlink():
                files += [(p, folder) for p in sorted((path / folder).rglob("*"))
                          if p.is_file() and p.suffix.lower() in suffixes]
        if files:
            self._put(("artifacts", files))
        if self.log_model and (path / "model.safetensors").is_file():
            staging = self._stage()  # a copy: the run folder may change (resume) while the queue waits
            for name in ("model.safetensors", "config.json"):
                shutil.copy2(path / name, staging / "data" / name)
            self._put(("model", staging))
        self._put(("end", "FINISHED" if metrics is not None else "KILLED"))
        self.close()

    # --- closing -------------------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is sent (True) or `timeout` seconds pass without progress."""
        limit = self.timeout if timeout is None else timeout
        with self._cond:
            self._last_progress = time.monotonic()
            while self._queue or self._busy:
                left = limit - (time.monotonic() - self._last_progress)
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        """Send what is left (bounded by `timeout` without progress), stop the thread, report what failed."""
        if self._thread is None:
            return
        done = self.flush()
        with self._cond:
            self._closing = True
            if not done:
                self._abandoned = True
                self.dropped = [_what(op) for op in self._queue]
                self._queue.clear()
            self._cond.notify_all()
        if done:
            self._thread.join(timeout=1.0)
        self._thread = None
        if self._staging is not None and done:
            shutil.rmtree(self._staging, ignore_errors=True)
        self._report()

    def _report(self) -> None:
        if self._failure is None:
            return
        when, why = self._failure
        head = f"MLflow at {self.tracking_uri} failed {when} ({why})"
        if self.dropped:
            kept = f"; run {self.run_id} has what came before" if self.run_id else ""
            message = (f"{head}; training went on; not logged: {_join(self.dropped)}{kept}"
                       + (f"; the run folder {self.run_folder} is complete" if self.run_folder else ""))
        else:
            message = f"{head}; training went on and the log caught up when it answered again"
        self._note(message)

    # --- the sending side (background thread) --------------------------------------------------------------
    _busy = False

    def _start_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._closing = self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="mlplab-mlflow", daemon=True)
        self._thread.start()

    def _put(self, op) -> None:
        if self._thread is None:
            self._start_thread()
        with self._cond:
            self._queue.append(op)
            self._cond.notify_all()

    def _stage(self) -> Path:
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="mlplab-mlflow-"))
        folder = Path(tempfile.mkdtemp(dir=self._staging))
        (folder / "data").mkdir()
        return folder

    def _run(self) -> None:
        # MLflow's own defaults (7 retries with back-off, 120 s per request) would hold the queue for minutes
        # on a dead server; this thread retries itself, so each request is one bounded attempt
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.request_timeout))
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # the library never prints
        client = None
        failures = 0
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._abandoned or (self._closing and not self._queue):
                    return
                op = self._queue[0]
                self._busy = True
            try:
                if client is None:
                    from mlflow.tracking import MlflowClient

                    client = MlflowClient(tracking_uri=self.tracking_uri)
                self._send(client, op)
            except Exception as exc:  # any failure of the store: keep the op, retry after a pause
                failures += 1
                if self._failure is None:
                    self._failure = (f"sending {_what(op)}", _describe(exc))
                log.debug("mlflow: %s failed (%s); retrying", op[0], _describe(exc))
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                    if not self._abandoned:
                        self._cond.wait(RETRY_SECONDS[min(failures - 1, len(RETRY_SECONDS) - 1)])
                continue
            failures = 0
            with self._cond:
                if self._queue and self._queue[0] is op:
                    self._queue.popleft()
                self._busy = False
                self._last_progress = time.monotonic()
                self._cond.notify_all()

    def _send(self, client, op) -> None:
        from mlflow.entities import Metric, Param, RunTag

        kind = op[0]
        if kind == "start":
            _, params, tags, epochs_done = op
            existing = self._existing_run(client) if self.run_id is not None else None
            if existing is None:
                experiment = client.get_experiment_by_name(self.experiment)
                experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment)
                lost = self.run_id
                run = client.create_run(experiment_id, run_name=self.run_name)
                self.run_id = run.info.run_id
                self._logged = {}
                if lost is not None:
                    self._note(f"MLflow run {lost} is not in {self.tracking_uri} (deleted?); logging to a new run, "
                               f"{self.run_id}")
            else:  # a resumed run folder's run, or a second fit() with the same logger: continue it
                client.update_run(self.run_id, status="RUNNING")
                before = existing.data.params
                # MLflow refuses to change a logged parameter: a changed value (epochs, after a resume) is a tag
                tags = {**tags, **{f"mlplab.resumed.{k}": v for k, v in params.items() if k in before and before[k] != v}}
                params = {k: v for k, v in params.items() if k not in before}
                # the steps already there (a process killed after logging an epoch but before saving it
                # trains that epoch again): each step is logged once
                self._logged = {key: {m.step for m in client.get_metric_history(self.run_id, key)}
                                for key in existing.data.metrics}
            client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()],
                             tags=[RunTag(k, v) for k, v in tags.items()])
            self._record()
        elif kind == "metrics":
            _, values, step, stamp = op
            values = {k: v for k, v in values.items() if step not in self._logged.get(k, ())}
            if values:
                client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in values.items()])
        elif kind == "history":
            _, rows, stamp = op
            metrics = [Metric(k, v, stamp, step) for step, values in rows for k, v in values.items()
                       if step not in self._logged.get(k, ())]
            for i in range(0, len(metrics), 1000):  # MLflow's limit per batch
                client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
                for m in metrics[i:i + 1000]:  # a retry after a failure here resends only the rest
                    self._logged.setdefault(m.key, set()).add(m.step)
        elif kind == "artifacts":
            for path, folder in op[1]:
                client.log_artifact(self.run_id, str(path), folder or None)
        elif kind == "model":
            self._send_model(client, op[1])
        elif kind == "end":
            client.set_terminated(self.run_id, status=op[1])

    def _existing_run(self, client):
        """The run `run_id` names, or None when the store does not have it (any more)."""
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(self.run_id)
        except MlflowException as exc:
            if getattr(exc, "error_code", None) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise  # the store did not answer: retried like any other request
            return None
        return run if run.info.lifecycle_stage == "active" else None

    def _record(self) -> None:
        """Write the run id into the run folder's mlflow.json, so that a resume continues this run."""
        if self.run_folder is None:
            return
        from mlplab.atomic import atomic_write_json

        entry = {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "experiment": self.experiment}
        runs = _read_record(self.run_folder)
        if entry in runs:
            return
        runs = [r for r in runs if r.get("tracking_uri") != self.tracking_uri] + [entry]
        try:
            atomic_write_json(self.run_folder / RECORD_FILE, {"format": RECORD_FORMAT, "runs": runs})
        except (OSError, MlplabError) as exc:
            self._note(f"could not record MLflow run {self.run_id} in {self.run_folder / RECORD_FILE} ({exc}); "
                       "a resume of this run folder will log to a new MLflow run")

    def _note(self, message: str) -> None:
        self.warnings.append(message)
        log.warning(message)

    def _send_model(self, client, staging: Path) -> None:
        import mlflow.pyfunc

        import mlplab

        saved = staging / "mlflow-model"
        if not saved.exists():
            # loader_module: MLflow imports mlplab.runs.mlflow_pyfunc to load it; nothing is pickled.
            # The requirements are given, so MLflow does not start a process to guess them.
            mlflow.pyfunc.save_model(str(saved), loader_module="mlplab.runs.mlflow_pyfunc",
                                     data_path=str(staging / "data"),
                                     pip_requirements=[f"mlplab=={mlplab.__version__}", "torch", "safetensors",
                                                       "numpy", "pandas"])
        client.log_artifacts(self.run_id, str(saved), "model")


def _metric_values(row: dict) -> dict:
    return {k: float(row[k]) for k in METRICS if k in row and not math.isnan(float(row[k]))}


def _param(value) -> str:
    return "none" if value is None else str(value)[:6000]  # MLflow's limit on a parameter value


def _what(op) -> str:
    kind = op[0]
    if kind == "metrics":
        return f"metrics of epoch {op[2]}" if "loss" in op[1] else "test metrics"
    if kind == "history":
        first, last = op[1][0][0], op[1][-1][0]
        return f"the history of epochs {first}-{last}" if last > first else f"the history of epoch {first}"
    return {"start": "the run itself", "artifacts": "the run folder's files", "model": "the model",
            "end": "the run's end status"}[kind]


def _join(items: list[str]) -> str:
    """'metrics of epoch 3', 'metrics of epoch 4', ... -> 'metrics of epochs 3-4', in the order they were queued."""
    epochs = [int(s.rsplit(" ", 1)[1]) for s in items if s.startswith("metrics of epoch ")]
    parts = []
    for s in items:
        if not s.startswith("metrics of epoch "):
            parts.append(s)
        elif int(s.rsplit(" ", 1)[1]) == epochs[0]:
            parts.append(s if len(epochs) == 1 else f"metrics of epochs {epochs[0]}-{epochs[-1]}")
    return ", ".join(parts)
