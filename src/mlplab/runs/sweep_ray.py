"""`mlplab sweep --ray ADDRESS`: the same trials as Ray tasks on an existing cluster.

The driver (this process) owns the study in DIR/study.db: it asks Optuna for each trial and tells the result,
so the SQLite file is only ever opened on the driver's machine. Each task trains its trial in a scratch folder
on whatever node runs it and returns the run folder's files, which the driver writes under DIR/trials/. Per-epoch
reports reach the pruner through a small actor pinned to the driver's node. A task whose worker or node dies is
retried by Ray (MAX_RETRIES); when the retries are spent, its trial is marked failed with the reason.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mlplab.errors import MlplabError
from mlplab.runs import sweep as sw
from mlplab.runs.sweep_space import SweepSpec

MAX_RETRIES = 1


def need_ray():
    try:
        import ray
    except ImportError:
        raise MlplabError("mlplab sweep --ray needs Ray: pip install 'mlplab[ray]'") from None
    return ray


class PruneOracle:
    """Lives on the driver's node and holds the study: tasks report each epoch's value and ask whether to stop."""

    def __init__(self, out: str, spec: SweepSpec):
        self.study = sw.open_study(spec, out, create=False)

    def report(self, trial_id: int, value: float, step: int) -> bool:
        import optuna

        trial = optuna.trial.Trial(self.study, trial_id)
        trial.report(value, step)
        return trial.should_prune()


def _run_remote(values: dict, spec_fields: dict, data, threads, oracle, trial_id: int) -> dict:
    """A Ray task: train one trial in a scratch folder; return the outcome and the run folder's files."""
    import shutil
    import tempfile

    import ray

    scratch = Path(tempfile.mkdtemp(prefix="mlplab-trial-"))
    pending = {"prune": False}

    def report(value, step):
        pending["prune"] = ray.get(oracle.report.remote(trial_id, value, step))

    try:
        outcome = sw.run_trial(values, scratch / "run", objective=spec_fields["objective"],
                               direction=spec_fields["direction"], report=report,
                               should_prune=lambda: pending["prune"], time_budget=spec_fields["time_budget"],
                               data=data, threads=threads)
        files = {}
        root = scratch / "run"
        if root.exists():
            for p in root.rglob("*"):
                if p.is_file() and p.name != ".lock":
                    files[str(p.relative_to(root))] = p.read_bytes()
        return {"outcome": outcome, "files": files, "node": ray.get_runtime_context().get_node_id()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_files(folder: Path, files: dict) -> None:
    from mlplab.atomic import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        target = (folder / rel).resolve()
        if folder.resolve() not in target.parents:  # names come from our own task, but never write outside
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)


def _check_reachable(address: str) -> None:
    """HOST:PORT must answer before ray.init, which would otherwise retry a wrong address for minutes."""
    import socket

    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise MlplabError(f"--ray must be HOST:PORT (the address `ray start --head` prints), ray://HOST:PORT or "
                          f"auto (got {address!r})")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise MlplabError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; start one with "
                          "`ray start --head`") from None


def run_sweep_ray(spec: SweepSpec, out, *, address: str, trials: int | None = None, data: str | None = None,
                  threads: int | None = None, on_event=None, poll: float = 0.2) -> dict:
    """Run the study to `trials` counted trials as Ray tasks, as many at once as the cluster has CPUs for."""
    ray = need_ray()
    out = Path(out).resolve()
    total = trials if trials is not None else spec.trials
    data = data if data is not None else spec.data
    if data is None and "data" not in spec.fixed:
        raise MlplabError("the sweep has no data: give --data NAME|PATH or data in [sweep]")
    study = sw.open_study(spec, out, create=True)
    stale = sw.mark_stale_running(study, "the sweep process stopped while this trial ran")
    if stale and on_event:
        on_event(f"trials {', '.join(map(str, stale))} were left running by a stopped sweep: marked failed")
    remaining = max(0, total - sw.counted_trials(study))
    if remaining == 0:
        return {"started": 0, "failed": []}
    _check_reachable(address)
    env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} if os.environ.get("PYTHONPATH") else None
    try:
        ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level="ERROR",
                 ignore_reinit_error=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise MlplabError(f"cannot connect to the Ray cluster at {address!r}: {str(exc).splitlines()[0]}; "
                          "start one with `ray start --head` (or give --ray auto on a cluster node)") from None
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        here = ray.get_runtime_context().get_node_id()
        oracle = ray.remote(num_cpus=0)(PruneOracle).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote(str(out), spec)
        cpus = threads or 1
        task = ray.remote(num_cpus=cpus, max_retries=MAX_RETRIES, retry_exceptions=False)(_run_remote)
        spec_fields = {"objective": spec.objective, "direction": spec.direction, "time_budget": spec.time_budget}
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
        running: dict = {}
        failed = []
        started = 0
        try:
            while started < remaining or running:
                while started < remaining and len(running) < slots:
                    trial = study.ask()
                    trial.set_user_attr("ray", True)
                    values = sw.suggest(trial, spec)
                    ref = task.remote(values, spec_fields, data, threads or 1, oracle, trial._trial_id)
                    running[ref] = trial
                    started += 1
                done, _ = ray.wait(list(running), num_returns=1, timeout=poll)
                for ref in done:
                    trial = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        reason = (f"its Ray worker was lost ({type(exc).__name__}) and the retry "
                                  f"({MAX_RETRIES}) failed too")
                        trial.set_user_attr("fail_reason", reason)
                        study.tell(trial, state=sw.need_optuna().trial.TrialState.FAIL)
                        failed.append(trial.number)
                        if on_event:
                            on_event(f"trial {trial.number}: {reason}; marked failed, the sweep goes on")
                        continue
                    folder = sw.trial_dir(out, trial.number)
                    _write_files(folder, result["files"])
                    outcome = result["outcome"]
                    outcome.attrs["run"] = str(folder)
                    outcome.attrs["node"] = result["node"]
                    sw.tell(study, trial, outcome)
        except (KeyboardInterrupt, Exception):
            for ref, trial in running.items():
                ray.cancel(ref, force=True)
                trial.set_user_attr(sw.INTERRUPTED, True)
                trial.set_user_attr("fail_reason", sw.INTERRUPTED)
                study.tell(trial, state=sw.need_optuna().trial.TrialState.FAIL)
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        return {"started": started, "failed": failed}
    finally:
        ray.shutdown()
        time.sleep(0)
