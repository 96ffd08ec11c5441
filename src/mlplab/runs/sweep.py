"""Sweeps: an Optuna study (TPE, seeded; a median or Hyperband pruner) whose trials are mlplab runs.

The study lives in DIR/study.db (Optuna's SQLite storage); trial N's run folder is DIR/trials/NNNN. `run_sweep`
starts K worker processes on that storage; each asks Optuna for a trial, trains it with `train_run` and a
callback that reports the objective every epoch (and stops a pruned trial), then tells the result. The parent
only watches: a worker that dies (kill -9) has its running trial marked failed and is replaced. Ctrl-C stops
every trial at a batch boundary; an interrupted trial is marked failed and queued again with the same values,
so the same command continues the study. `mlplab sweep --ray` runs the same trials as Ray tasks (sweep_ray.py).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mlplab.errors import MlplabError
from mlplab.runs.sweep_space import SweepSpec, trial_options, _NUMBERED
from mlplab.train.callbacks import Callback

log = logging.getLogger(__name__)

STUDY_NAME = "mlplab"
STUDY_FILE = "study.db"
INTERRUPTED = "interrupted"  # user attribute: the trial was stopped by Ctrl-C/SIGTERM and queued again


def need_optuna():
    try:
        import optuna
    except ImportError:
        raise MlplabError("mlplab sweep needs Optuna: pip install 'mlplab[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(out) -> str:
    return f"sqlite:///{Path(out).resolve() / STUDY_FILE}"


def trial_dir(out, number: int) -> Path:
    return Path(out) / "trials" / f"{number:04d}"


def _storage(out):
    optuna = need_optuna()
    # a generous SQLite busy timeout: K workers write their per-epoch reports to one file
    return optuna.storages.RDBStorage(storage_url(out), engine_kwargs={"connect_args": {"timeout": 60}})


def _pruner(spec: SweepSpec):
    optuna = need_optuna()
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=int(spec.fixed.get("epochs", 20)))
    return optuna.pruners.NopPruner()


def open_study(spec: SweepSpec, out, *, create: bool, stream: int = 0):
    """The study in out/study.db: made with `spec`, or continued when it was made with the same search."""
    optuna = need_optuna()
    out = Path(out)
    db = out / STUDY_FILE
    if not create and not db.exists():
        raise MlplabError(f"{out} has no sweep ({STUDY_FILE} is missing)")
    if create:
        out.mkdir(parents=True, exist_ok=True)
        (out / "trials").mkdir(exist_ok=True)
    study = optuna.create_study(storage=_storage(out), study_name=STUDY_NAME, load_if_exists=True,
                                direction=spec.direction, sampler=_sampler(spec, stream), pruner=_pruner(spec))
    made = study.user_attrs.get("fingerprint")
    if made is None:
        study.set_user_attr("fingerprint", spec.fingerprint())
        study.set_user_attr("objective", spec.objective)
        study.set_user_attr("fixed", spec.fixed)
        study.set_user_attr("data", spec.data)
    elif made != spec.fingerprint():
        raise MlplabError(f"{db} holds a sweep with another search space, objective or fixed options; "
                          "continue it with the file it was made with, or choose a new --out")
    return study


def _sampler(spec: SweepSpec, stream: int):
    """TPE seeded from the sweep's seed and `stream`: each worker (and each continuation) draws its own random
    start-up values; with one seed for all, K workers would all try the same values."""
    optuna = need_optuna()
    seed = (spec.seed * 1_000_003 + stream) % 2**32
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, max(1, spec.trials // 2)))


def open_existing_study(out):
    optuna = need_optuna()
    db = Path(out) / STUDY_FILE
    if not db.exists():
        raise MlplabError(f"{out} has no sweep ({STUDY_FILE} is missing)")
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=_storage(out))
    except KeyError:
        raise MlplabError(f"{db} holds no mlplab sweep") from None


# --- sampling ---------------------------------------------------------------------------------------------------
def suggest(trial, spec: SweepSpec) -> dict:
    """Fixed values plus the sampled ones. Options that do not apply to the values drawn so far are not drawn
    (momentum for adam, nesterov without momentum, step_size/gamma without the step schedule, dropout_N past
    depth), so every trial is a valid run and TPE does not learn from settings that had no effect."""
    values = dict(spec.fixed)
    # the values others depend on first (momentum before nesterov is already the table's order)
    order = sorted(spec.params, key=lambda p: p.name not in ("optimizer", "schedule", "depth"))
    for p in order:
        if not _applies(p.name, values):
            continue
        if p.choices is not None:
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind is int:
            values[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log, step=p.step or 1)
        else:
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
    for name in list(values):  # a fixed value that the drawn ones make meaningless (nesterov at momentum 0)
        if not _applies(name, values):
            del values[name]
    return values


def _applies(name: str, values: dict) -> bool:
    optimizer = values.get("optimizer", "sgd")
    if name == "momentum":
        return optimizer in ("sgd", "rmsprop")
    if name == "nesterov":
        return optimizer == "sgd" and values.get("momentum", 0.0) > 0
    if name in ("step_size", "gamma"):
        return values.get("schedule", "constant") == "step"
    m = _NUMBERED.fullmatch(name)
    if m:
        return int(m.group(2)) <= int(values.get("depth", 2))
    return True


def options_for(values: dict, *, data: str | None, threads: int | None, seed_default: int = 0):
    from mlplab.train.options import TrainOptions

    mapping = trial_options(values)
    if data is not None:
        mapping["data"] = data
    mapping.setdefault("seed", seed_default)
    if threads is not None:
        mapping["threads"] = threads
    return TrainOptions.from_mapping(mapping, where="trial")


# --- one trial --------------------------------------------------------------------------------------------------
class ObjectiveReporter(Callback):
    """Reports the objective after every epoch and stops the run when the pruner says so, or when the trial's
    training time passes the time budget (then only the epochs inside the budget count)."""

    def __init__(self, objective: str, report, should_prune, time_budget: float | None = None):
        self.objective = objective
        self.report = report
        self.should_prune = should_prune
        self.time_budget = time_budget
        self.pruned = False
        self.values: list[float] = []
        self.spent = 0.0
        self.over_budget = False

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        self.spent += float(logs.get("seconds", 0.0) or 0.0)
        if self.time_budget is not None and self.spent > self.time_budget and self.values:
            self.over_budget = True  # this epoch ended past the budget: it does not count
            trainer.stop_training = True
            return
        value = logs.get(self.objective)
        value = float(value) if value is not None else math.nan
        self.values.append(value)
        self.report(value, epoch + 1)
        if self.should_prune():
            self.pruned = True
            trainer.stop_training = True

    def final(self, direction: str, restored: bool) -> float:
        """The value of the weights the run keeps: the last epoch's, or the best epoch's where early stopping
        put the best weights back (the test metrics are measured on those same weights)."""
        finite = [v for v in self.values if math.isfinite(v)]
        if not finite:
            return math.nan
        if restored:
            return max(finite) if direction == "maximize" else min(finite)
        return self.values[-1]


@dataclass
class TrialOutcome:
    state: str            # COMPLETE, PRUNED, FAIL
    value: float | None
    attrs: dict
    interrupted: bool = False


def run_trial(values: dict, out: Path, *, objective: str, direction: str, report, should_prune,
              time_budget, data, threads) -> TrialOutcome:
    """Train one trial into the run folder `out`; what to tell Optuna. Never raises for a failed trial."""
    from mlplab.runs.session import train_run
    from mlplab.train.trainer import TrainingDiverged

    t0 = time.perf_counter()
    attrs = {"run": str(out)}
    try:
        opts = options_for(values, data=data, threads=threads)
        attrs["options"] = {k: v for k, v in opts.as_dict().items() if k not in ("threads", "device")}
        reporter = ObjectiveReporter(objective, report, should_prune, time_budget)
        result = train_run(opts, out, overwrite=True, callbacks=[reporter])
    except TrainingDiverged as exc:
        return TrialOutcome("FAIL", None, dict(attrs, fail_reason=f"diverged: {exc}"))
    except MlplabError as exc:
        return TrialOutcome("FAIL", None, dict(attrs, fail_reason=str(exc)))
    history = result.history
    attrs["seconds"] = round(sum(float(r.get("seconds") or 0.0) for r in history.rows), 3)
    attrs["wall_seconds"] = round(time.perf_counter() - t0, 3)
    attrs["epochs"] = len(reporter.values)
    if result.metrics is None:
        return TrialOutcome("FAIL", None, dict(attrs, fail_reason=INTERRUPTED), interrupted=True)
    attrs["test_accuracy"] = result.metrics["test_accuracy"]
    attrs["test_loss"] = result.metrics["test_loss"]
    value = reporter.final(direction, restored=bool(opts.early_stop and opts.restore_best))
    if reporter.pruned:
        return TrialOutcome("PRUNED", value, attrs)
    if not math.isfinite(value):
        return TrialOutcome("FAIL", None, dict(attrs, fail_reason=f"{objective} was never finite"))
    return TrialOutcome("COMPLETE", value, attrs)


def tell(study, trial, outcome: TrialOutcome) -> None:
    optuna = need_optuna()
    for k, v in outcome.attrs.items():
        trial.set_user_attr(k, v)
    state = getattr(optuna.trial.TrialState, outcome.state)
    if outcome.interrupted:
        trial.set_user_attr(INTERRUPTED, True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        # the same values again first, when the sweep continues
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        return
    if state == optuna.trial.TrialState.COMPLETE:
        study.tell(trial, outcome.value)
    else:
        study.tell(trial, state=state)


def counted_trials(study) -> int:
    """Trials that count toward --trials: finished or running, but not those stopped by Ctrl-C (queued again)."""
    optuna = need_optuna()
    S = optuna.trial.TrialState
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (S.COMPLETE, S.PRUNED, S.FAIL, S.RUNNING) and not t.user_attrs.get(INTERRUPTED))


def mark_stale_running(study, reason: str, *, only_pids=None) -> list[int]:
    """Trials left RUNNING by a process that died: failed, with the reason stored. only_pids: just those
    workers' trials (the others are still running)."""
    optuna = need_optuna()
    S = optuna.trial.TrialState
    marked = []
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
        if only_pids is not None and t.user_attrs.get("pid") not in only_pids:
            continue
        storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        try:
            storage.set_trial_state_values(t._trial_id, S.FAIL)
        except RuntimeError:  # finished meanwhile
            continue
        marked.append(t.number)
    return marked


# --- local workers ----------------------------------------------------------------------------------------------
_stopping = False


def _stop_between_trials(signum, frame):
    global _stopping
    _stopping = True


def worker_main(out: str, spec: SweepSpec, slots, data, threads, stop, stream: int) -> None:
    """One worker process: take a slot, run a trial, repeat until no slot is left or a stop is asked."""
    import queue
    import signal

    # Its own session: the terminal's Ctrl-C reaches only the parent, which then sends each worker one SIGTERM.
    # During a trial train_run's handler turns it into a stop at a batch boundary; between trials, this one.
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_between_trials)
    out = Path(out)
    study = open_study(spec, out, create=False, stream=stream)
    import mlplab.runs.session  # noqa: F401  (torch and the engine load once per worker, not in its first trial)
    pid = os.getpid()
    while not (stop.is_set() or _stopping):
        try:
            slots.get_nowait()
        except queue.Empty:
            return
        trial = study.ask()
        trial.set_user_attr("pid", pid)
        values = suggest(trial, spec)
        outcome = run_trial(values, trial_dir(out, trial.number), objective=spec.objective,
                            direction=spec.direction, report=trial.report, should_prune=trial.should_prune,
                            time_budget=spec.time_budget, data=data, threads=threads)
        tell(study, trial, outcome)
        if outcome.interrupted:
            return


def split_threads(workers: int, threads: int | None) -> int | None:
    from mlplab.train.trainer import usable_cpus

    if threads is not None:
        return threads
    return max(1, usable_cpus() // workers)


def run_sweep(spec: SweepSpec, out, *, trials: int | None = None, workers: int = 1, data: str | None = None,
              threads: int | None = None, on_event=None, poll: float = 0.2) -> dict:
    """Run the study to `trials` counted trials with `workers` local processes; returns a summary dict."""
    import multiprocessing as mp
    import signal

    from mlplab.errors import Terminated

    out = Path(out)
    total = trials if trials is not None else spec.trials
    data = data if data is not None else spec.data
    if data is None and "data" not in spec.fixed:
        raise MlplabError("the sweep has no data: give --data NAME|PATH or data in [sweep]")
    if workers < 1:
        raise MlplabError(f"--workers must be an integer >= 1 (got {workers})")
    study = open_study(spec, out, create=True)
    stale = mark_stale_running(study, "the sweep process stopped while this trial ran")
    if stale and on_event:
        on_event(f"trials {', '.join(map(str, stale))} were left running by a stopped sweep: marked failed")
    remaining = max(0, total - counted_trials(study))
    per_worker = split_threads(workers, threads)
    ctx = mp.get_context("spawn")
    slots, stop = ctx.Queue(), ctx.Event()
    for _ in range(remaining):
        slots.put(1)
    n_workers = min(workers, remaining)
    procs, lost = [], []

    first_stream = len(study.get_trials(deepcopy=False)) * 1_000

    def start():
        stream = first_stream + len(procs) + len(lost) + 1
        p = ctx.Process(target=worker_main, args=(str(out), spec, slots, data, per_worker, stop, stream),
                        daemon=True)
        p.start()
        procs.append(p)

    for _ in range(n_workers):
        start()
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(poll)
            for p in list(procs):
                if p.exitcode is not None and p.exitcode != 0:
                    procs.remove(p)
                    marked = mark_stale_running(study, f"its worker process (pid {p.pid}) died "
                                                f"(exit code {p.exitcode})", only_pids={p.pid})
                    lost.append((p.pid, p.exitcode, marked))
                    if on_event:
                        on_event(f"worker pid {p.pid} died (exit code {p.exitcode}): trial "
                                 f"{', '.join(map(str, marked)) or '(none)'} marked failed; the sweep goes on")
                    if not slots.empty() and not stop.is_set():
                        start()
    except (KeyboardInterrupt, Terminated):
        stop.set()
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)  # once: the trial stops at a batch boundary and is queued again
        for p in procs:
            p.join(timeout=120)
        for p in procs:
            if p.is_alive():
                p.kill()
        mark_stale_running(study, "the sweep was interrupted while this trial ran")
        raise
    finally:
        slots.close()
    # a worker killed between asking for a trial and recording its pid leaves one RUNNING with no owner
    mark_stale_running(study, "its worker process died before the trial started")
    return {"started": remaining, "lost_workers": lost}


# --- reading a study --------------------------------------------------------------------------------------------
def trial_rows(study) -> list[dict]:
    """One plain row per trial, for --status, the page and --export."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        state = t.state.name
        if state == "FAIL" and a.get(INTERRUPTED):
            state = "INTERRUPTED"
        # a pruned trial's value is its last report (Optuna's); one never told has its best report shown
        value = t.value if t.value is not None else (
            None if not t.intermediate_values else _best_of(list(t.intermediate_values.values()), study.direction))
        rows.append({"number": t.number, "state": state, "value": value, "params": dict(t.params),
                     "epochs": a.get("epochs"), "seconds": a.get("seconds"), "test_accuracy": a.get("test_accuracy"),
                     "reason": a.get("fail_reason"), "run": a.get("run"), "options": a.get("options"),
                     "curve": [t.intermediate_values[k] for k in sorted(t.intermediate_values)]})
    return rows


def _best_of(values, direction) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if direction.name == "MAXIMIZE" else min(finite)


def sweep_status(out) -> dict:
    study = open_existing_study(out)
    rows = trial_rows(study)
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    best = best_row(study, rows)
    return {"objective": study.user_attrs.get("objective", "value"), "direction": study.direction.name.lower(),
            "counts": counts, "rows": rows, "best": best}


def best_row(study, rows=None) -> dict | None:
    rows = rows if rows is not None else trial_rows(study)
    done = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    if not done:
        return None
    pick = max if study.direction.name == "MAXIMIZE" else min
    return pick(done, key=lambda r: (r["value"], -r["number"]) if pick is max else (r["value"], r["number"]))


def toml_text(options: dict, header: str) -> str:
    """A flat TOML table of scalar options (what `mlplab train --config` reads)."""
    import json

    lines = [f"# {line}" for line in header.splitlines()]
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = json.dumps(str(value))  # JSON string escapes are TOML basic-string escapes
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def export_best(out, path) -> dict:
    """Write the best completed trial's options as a `--config` file; returns that trial's row."""
    from mlplab.atomic import atomic_write_text

    study = open_existing_study(out)
    best = best_row(study)
    if best is None:
        raise MlplabError(f"the sweep in {out} has no completed trial yet; nothing to export")
    options = {k: v for k, v in best["options"].items() if k not in ("tensorboard", "mlflow")}
    header = (f"Best trial {best['number']} of the sweep in {Path(out).resolve()}: "
              f"{study.user_attrs.get('objective', 'value')} {best['value']:.4f}\n"
              f"mlplab train --config {Path(path).name} --out RUN")
    atomic_write_text(Path(path), toml_text(options, header))
    return best
