"""A whole training run from options to a finished run directory: what `mlplab train` and experiment
stages call. Data is loaded, the model built, the Trainer wired to a RunWriter, the test split evaluated
once at the end. `resume_run` rebuilds all of it from config.json and the last checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlplab.runs.config import TrainOptions
from mlplab.errors import MlplabError
from mlplab.runs.folder import RUN_FORMAT, open_run
from mlplab.train.callbacks import EarlyStopping, resolve_mode
from mlplab.train.history import History
from mlplab.runs.lock import run_lock
from mlplab.runs.writer import RunWriter, check_run_dir, prepare_run_dir, remove_temp_leftovers
from mlplab.train.trainer import Trainer, TrainingDiverged


@dataclass
class TrainResult:
    path: Path
    history: History
    metrics: dict | None      # None when training was interrupted
    interrupted_at: tuple[int, int] | None = None
    warnings: list[str] = field(default_factory=list)  # one line each, from the loggers (MLflow unreachable...)
    target_epochs: int | None = None   # the epochs the run was asked to reach (for the resume hint)
    stop_signal: int | None = None  # the signal that stopped it (SIGINT, SIGTERM, SIGHUP); None otherwise


# Data without a test part of its own gets a held-out test split made with this fixed seed, whatever the
# training seed: runs with different seeds are then tested on the same samples (and `evaluate --data`
# of the same dataset never scores a model on its own training samples).
TEST_SPLIT_SEED = 0


def portable_data_name(data: str) -> str:
    """Named datasets stay names; a path is stored absolute so the run works from any directory."""
    from mlplab.data.sources import canonical

    if canonical(data) is not None:
        return data
    path = Path(data).expanduser()
    return str(path.resolve()) if path.exists() else data


def run_config(opts: TrainOptions, ds, input_dim: int) -> dict:
    return {
        "format": RUN_FORMAT,
        "data": {"name": opts.data, "val_split": opts.val_split, "input_dim": input_dim,
                 "input_shape": list(ds.input_shape), "n_classes": ds.n_classes,
                 "class_names": list(ds.class_names), "source": ds.source,
                 "load_options": {"test_fraction": opts.test_fraction, "seed": TEST_SPLIT_SEED}},
        "model": {"spec": opts.model, "input_dim": input_dim, "init": opts.init},
        "train": {k: v for k, v in opts.as_dict().items()
                  if k not in ("data", "model", "init", "test_fraction") and _recorded(k)},
    }


def _recorded(name: str) -> bool:
    return TrainOptions.__dataclass_fields__[name].metadata.get("recorded", True)


def _options_from_config(config: dict) -> TrainOptions:
    from mlplab.train.trainer import threads_problem

    train = dict(config["train"])
    if train.get("threads") is not None and threads_problem(train["threads"]):
        train["threads"] = None  # a run from a machine with more CPUs: use this machine's (--threads to choose)
    train.update(data=config["data"]["name"], model=config["model"]["spec"],
                 init=config["model"].get("init", "glorot_uniform"),
                 test_fraction=config["data"].get("load_options", {}).get("test_fraction", 0.2))
    return TrainOptions.from_mapping(train, where="config.json")


def _early_stopping(opts: TrainOptions) -> EarlyStopping | None:
    if not opts.early_stop:
        return None
    return EarlyStopping.from_string(opts.early_stop, min_delta=opts.min_delta,
                                     restore_best_weights=opts.restore_best)


def _monitor(opts: TrainOptions, es: EarlyStopping | None) -> tuple[str, str]:
    if es is not None:
        return es.monitor, es.mode
    monitor = "val_loss" if opts.val_split > 0 else "loss"
    return monitor, resolve_mode(monitor, "auto")


def _make_trainer(model, opts: TrainOptions) -> Trainer:
    return Trainer(model, loss=opts.loss, optimizer=opts.optimizer, lr=opts.lr, momentum=opts.momentum,
                   nesterov=opts.nesterov, weight_decay=opts.weight_decay, schedule=opts.schedule,
                   schedule_options={"step_size": opts.step_size, "gamma": opts.gamma} if opts.schedule == "step"
                   else {}, batch_size=opts.batch_size, seed=opts.seed, device=opts.device, threads=opts.threads,
                   precision=opts.precision)


def check_output_layer(model, ds, loss: str) -> None:
    """The model's output layer must fit the data's classes and the loss (train/metrics.py says how)."""
    from mlplab.data.validate import label_gaps
    from mlplab.train.metrics import output_layer_problem

    problem = output_layer_problem(model.n_outputs, model.output_activation, loss, ds.n_classes)
    if problem:
        gaps = label_gaps(ds.y_train, ds.y_test)
        if gaps:
            raise MlplabError(f"the model's output layer has {model.n_outputs} units and {gaps} "
                              f"(or end the spec with {ds.n_classes}:softmax)")
        raise MlplabError(problem)


def train_run(opts: TrainOptions, out, *, overwrite: bool = False, callbacks=()) -> TrainResult:
    from mlplab.data import load_dataset
    from mlplab.model import build, summary

    opts.validate()
    out = Path(out)
    opts.data = portable_data_name(opts.data)
    ds = load_dataset(opts.data, test_fraction=opts.test_fraction, seed=TEST_SPLIT_SEED)
    input_dim = int(np.prod(ds.input_shape))
    model = build(opts.model, input_dim, init=opts.init, seed=opts.seed)
    check_output_layer(model, ds, opts.loss)
    trainer = _make_trainer(model, opts)  # validates optimizer settings before anything is written
    if opts.snapshots is not None:
        from mlplab.train.snapshots import SnapshotSpec

        SnapshotSpec.parse(opts.snapshots).resolve_layers(model)  # a bad layer name fails before anything is written
    config = run_config(opts, ds, input_dim)
    callbacks = list(callbacks) + _loggers(opts, ds, out, config)  # a missing package fails here, too
    check_run_dir(out, overwrite=overwrite)  # before the lock file is created in a folder that is not ours
    with run_lock(out, "train", create=True):  # one writer per run folder, --overwrite included
        prepare_run_dir(out, overwrite=overwrite)
        es = _early_stopping(opts)
        monitor, mode = _monitor(opts, es)
        writer = RunWriter(out, config, monitor=monitor, mode=mode)
        writer.write_static(summary(model))
        return _fit_and_evaluate(trainer, writer, ds, opts, es, callbacks)


def _loggers(opts: TrainOptions, ds, path: Path, config: dict, *, resuming: bool = False) -> list:
    """The TensorBoard and MLflow callbacks that --tensorboard / --mlflow ask for. A resumed run continues
    the MLflow run recorded in its folder for that tracking store (RUN/mlflow.json)."""
    out = []
    spec, data = config["model"]["spec"], config["data"]["name"]
    if opts.tensorboard:
        from mlplab.runs.tensorboard import TensorBoard, run_hparams

        # the projector shows the test split (a seeded sample): samples the model was not trained on
        out.append(TensorBoard(opts.tensorboard, embeddings_data=(ds.x_test, ds.y_test),
                               class_names=list(ds.class_names), hparams=run_hparams(config["train"], spec, data),
                               seed=opts.seed))
    if opts.mlflow:
        from mlplab.runs.mlflow_logger import MLflowLogger, recorded_run

        params = {"data": data, "model": spec, "init": config["model"].get("init"),
                  "val_split": config["data"].get("val_split")}
        params.update({k: v for k, v in config["train"].items() if k not in ("device", "threads")})
        out.append(MLflowLogger(opts.mlflow, run_name=path.resolve().name, params=params,
                                run_id=recorded_run(path, opts.mlflow) if resuming else None))
    return out


def resume_run(path, *, epochs: int | None = None, callbacks=(), device: str | None = None,
               threads: int | None = None, tensorboard: str | None = None, mlflow: str | None = None) -> TrainResult:
    """Continue a run from its last checkpoint to `epochs` in total, holding the run folder's lock."""
    run = open_run(path)
    with run_lock(run.path, "resume"):
        return _resume_run(run, epochs=epochs, callbacks=callbacks, device=device, threads=threads,
                           tensorboard=tensorboard, mlflow=mlflow)


def _resume_run(run, *, epochs, callbacks, device, threads, tensorboard, mlflow) -> TrainResult:
    from mlplab.data import load_dataset
    from mlplab.model import build
    from mlplab.runs.checkpoint import load_training_state

    run = open_run(run.path)  # read again under the lock: another writer may have changed it meanwhile
    opts = _options_from_config(run.config)
    planned_epochs = opts.epochs
    if epochs is not None:
        opts.epochs = epochs
    if device is not None:
        opts.device = device
    if threads is not None:
        opts.threads = threads
    opts.tensorboard, opts.mlflow = tensorboard, mlflow  # where to log is not part of the run: given again
    opts.validate()
    last = run.checkpoint_dir / "last.safetensors"
    if not last.exists():
        raise MlplabError(f"run {run.path} has no checkpoint to resume from (checkpoints/last.safetensors is "
                          "missing: it had not finished its first epoch); start it again with --overwrite")
    ds = load_dataset(opts.data, **run.config["data"].get("load_options", {"test_fraction": opts.test_fraction}))
    input_dim = int(run.config["model"]["input_dim"])
    model = build(opts.model, input_dim, init=opts.init, seed=opts.seed)
    check_output_layer(model, ds, opts.loss)
    trainer = _make_trainer(model, opts)
    rng, extra, meta = load_training_state(last, model=trainer.model, optimizer=trainer.optimizer)
    callback_state = meta.get("callbacks", {})
    done = History(meta["history"]).epochs_done
    # A process that stopped after its last epoch's checkpoint but before the end of training (Ctrl-C in the
    # last batch, kill -9 while evaluating) left a run without its final steps: asking for the same number of
    # epochs again finishes it. A finished run has the test metrics in its manifest.
    try:
        manifest = run.manifest() or {}
    except MlplabError:  # informational only: a corrupt manifest must not block a resume
        manifest = {}
    unfinished = "test_accuracy" not in manifest
    stopped_early = any(isinstance(s, dict) and s.get("stopped_epoch") for s in callback_state.values())
    finish_only = unfinished and (opts.epochs == done or (
        stopped_early and opts.epochs == planned_epochs))
    if opts.epochs <= done and not finish_only:
        raise MlplabError(f"run {run.path} already has {done} epochs; resume to a later epoch with --epochs N "
                          f"(N > {done})")
    if stopped_early and not finish_only:
        # Training further a run that early stopping ended is a new fit() in Keras's terms: the patience
        # counter starts again (the best value so far is kept, so "best" still means best of the whole run).
        for state in callback_state.values():
            if isinstance(state, dict) and state.get("stopped_epoch"):
                state.update(wait=0, stopped_epoch=0)
    trainer.restore(rng=rng, history_rows=meta["history"], callback_state=callback_state, callback_tensors=extra)
    remove_temp_leftovers(run.path)  # what kill -9 left mid-write; readers ignore it, but it takes space
    if opts.snapshots is not None:
        from mlplab.runs.snapshots import discard_after

        # snapshots are written before their epoch's checkpoint: those past it are replayed, identically
        discard_after(run.path, done)
    es = _early_stopping(opts)
    monitor, mode = _monitor(opts, es)
    config = dict(run.config)
    config["train"] = dict(config["train"], epochs=opts.epochs)
    writer = RunWriter(run.path, config, monitor=monitor, mode=mode)
    from mlplab.atomic import atomic_write_json

    atomic_write_json(run.path / "config.json", config)
    callbacks = list(callbacks) + _loggers(opts, ds, run.path, config, resuming=True)
    return _fit_and_evaluate(trainer, writer, ds, opts, es, callbacks, finish_only=finish_only)


def _fit_and_evaluate(trainer: Trainer, writer: RunWriter, ds, opts: TrainOptions, es, callbacks,
                      finish_only: bool = False) -> TrainResult:
    trainer.finish_batch_on_ctrl_c = True  # a run directory can be resumed, so Ctrl-C stops cleanly
    cbs = list(callbacks)
    if es is not None:
        cbs.insert(0, es)  # first, so that its checkpointed state keeps the same position on resume
    if opts.snapshots is not None:
        from mlplab.runs.snapshots import snapshot_callback

        # before the writer: an epoch's snapshot is on disk before its checkpoint (see runs/snapshots.py)
        cbs.append(snapshot_callback(writer.path, opts.snapshots, trainer.model, ds, val_split=opts.val_split,
                                     seed=opts.seed, class_names=ds.class_names))
    cbs.append(writer)  # last: it saves what the other callbacks decided
    for cb in cbs:
        if hasattr(cb, "attach_run"):  # loggers that finish with the run folder (on_run_complete below)
            cb.attach_run(writer.path)
    try:
        if finish_only:
            history = trainer.finish(cbs)
        else:
            history = trainer.fit(ds.x_train, ds.y_train, epochs=opts.epochs, validation_split=opts.val_split,
                                  callbacks=cbs, split_seed=opts.seed)
    except TrainingDiverged as exc:
        writer.on_diverged(trainer)
        for cb in cbs:
            if hasattr(cb, "on_run_failed"):
                cb.on_run_failed(trainer)
        good = trainer.history.epochs_done
        where = f"; the last good checkpoint (epoch {good}) is kept in {writer.path}" if good else ""
        raise TrainingDiverged(f"{exc}{where}") from None
    except BaseException as exc:
        if writer.manifest:  # training had begun: record how it ended, then let the exception go on
            try:
                writer.on_abort(trainer, exc)
            except Exception:  # noqa: BLE001  (a failing manifest write must not hide the original error)
                pass
        raise
    if history.interrupted:
        return TrainResult(writer.path, history, None, getattr(trainer, "interrupted_at", None),
                           warnings=_warnings(cbs), target_epochs=opts.epochs, stop_signal=trainer.stop_signal)
    metrics = evaluate_model(trainer.model, ds, loss=trainer.loss, data_name=opts.data, device=trainer.device)
    from mlplab.atomic import atomic_write_json

    atomic_write_json(writer.path / "metrics.json", metrics)
    writer.update_manifest(test_accuracy=metrics["test_accuracy"], test_loss=metrics["test_loss"])
    for cb in cbs:
        if hasattr(cb, "on_run_complete"):  # loggers that keep the finished folder's files (MLflow)
            cb.on_run_complete(writer.path, metrics)
    return TrainResult(writer.path, history, metrics, warnings=_warnings(cbs), target_epochs=opts.epochs)


def _warnings(callbacks) -> list[str]:
    return [w for cb in callbacks for w in getattr(cb, "warnings", ())]


def evaluate_model(model, ds, *, loss: str = "categorical_crossentropy", data_name: str, device="cpu",
                   split: str = "test") -> dict:
    """Test loss, accuracy, per-class scores and confusion matrix of `model` on the dataset's test split."""
    import torch

    from mlplab.data import to_features
    from mlplab.model import engine
    from mlplab.train.metrics import classification_metrics, n_classes_of

    x = torch.from_numpy(to_features(ds.x_test)).to(device)
    y = torch.from_numpy(np.asarray(ds.y_test, dtype=np.int64)).to(device)
    if x.shape[1] != model.input_dim:
        raise MlplabError(f"the model takes {model.input_dim} inputs but {data_name} has {x.shape[1]} features")
    if len(y) and int(y.max()) >= n_classes_of(model.n_outputs):
        from mlplab.data.validate import label_gaps

        gaps = label_gaps(ds.y_test)
        raise MlplabError(f"{data_name} has labels up to {int(y.max())} but the model tells "
                          f"{n_classes_of(model.n_outputs)} classes apart" + (f"; {gaps}" if gaps else ""))
    test_loss, _ = engine.evaluate(model, x, y, loss)
    proba = engine.predict_proba(model, x).cpu().numpy()
    return classification_metrics(y_true=ds.y_test, probabilities=proba, loss=test_loss,
                                  class_names=list(ds.class_names), data=data_name, split=split)
