"""Faults: kill -9 at many moments (also in the middle of a checkpoint write), a full disk while saving, Ctrl-C.

The kill tests run the real CLI in subprocesses and kill them with SIGKILL, so nothing in mlplab gets a chance
to clean up. After every kill the run directory must load, show no half-written file under a final name, and
`mlplab train --resume` must carry on (or say in one line that there is no checkpoint yet).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from mlplab.errors import MlplabError
from mlplab.runs.folder import open_run

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL and /proc/self/fd are Linux features")

SPEC = "64:relu,dropout:0.2,10:softmax"
EPOCHS = 6


def train_args(epochs: int = EPOCHS) -> list[str]:
    return ["train", "--data", "digits", "--model", SPEC, "--epochs", str(epochs), "--batch-size", "16",
            "--threads", "1", "--quiet"]


TRAIN = train_args()


def _popen(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "mlplab", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


def _mlplab(args):
    p = subprocess.run([sys.executable, "-m", "mlplab", *args], capture_output=True, text=True)
    return p.returncode, p.stderr


def _rows(run: Path) -> int:
    try:
        text = (run / "history.csv").read_text()
    except OSError:
        return 0
    return max(0, len(text.splitlines()) - 1)


def _tmp_files(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def check_run_dir(run: Path) -> dict:
    """Everything a reader can see under its final name is whole; returns what was found."""
    from mlplab.model import build
    from mlplab.runs.checkpoint import load_training_state, load_weights
    from mlplab.train.trainer import Trainer

    r = open_run(run)
    rows = r.history()
    assert [row["epoch"] for row in rows] == list(range(1, len(rows) + 1))
    for name in ("manifest.json", "metrics.json", "checkpoints/best.json"):
        if (run / name).exists():
            json.loads((run / name).read_text())
    if (run / "summary.txt").exists():
        assert "Total params" in (run / "summary.txt").read_text()
    if r.weights_path.exists():
        model = r.model()
        assert all(torch.isfinite(p).all() for p in model.parameters())
    if (run / "checkpoints/best.safetensors").exists():
        load_weights(build(SPEC, 64), run / "checkpoints/best.safetensors")
    ckpt_epoch = 0
    last = run / "checkpoints/last.safetensors"
    if last.exists():
        model = build(SPEC, 64)
        trainer = Trainer(model, batch_size=16)
        _, _, meta = load_training_state(last, model=model, optimizer=trainer.optimizer)
        ckpt_epoch = int(meta["epoch"])
        # the checkpoint is written first, history.csv after it: history never runs ahead of the checkpoint
        assert len(rows) in (ckpt_epoch, ckpt_epoch - 1)
    else:
        assert rows == []
    return {"rows": len(rows), "checkpoint": ckpt_epoch, "tmp": len(_tmp_files(run))}


# kill moments: ("start", seconds after launch), ("rows+K", seconds after K more epochs are on disk),
# ("final", seconds after the last epoch is on disk: evaluation and the last writes), or
# ("write", FILE, WHERE): the process kills itself inside its first write of FILE (see KILL_IN_WRITE below):
# half of the data written ("mid-write") or all of it fsynced but not yet renamed ("before-rename").
TRIGGERS = [
    ("start", 0.4), ("rows+1", 0.0), ("write", "last.safetensors", "mid-write"), ("rows+1", 0.15),
    ("start", 2.5), ("write", "history.csv", "before-rename"), ("rows+2", 0.05), ("final", 0.0),
    ("write", "model.safetensors", "mid-write"), ("rows+1", 0.3), ("write", "last.safetensors", "before-rename"),
    ("start", 1.2), ("rows+1", 0.02), ("final", 0.01), ("write", "manifest.json", "mid-write"), ("rows+2", 0.4),
    ("write", "config.json", "before-rename"), ("rows+1", 0.6), ("write", "metrics.json", "mid-write"),
    ("final", 0.05),
]


def _wait_and_kill(proc, run: Path, trigger: str, delay: float) -> bool:
    """Poll the run directory until the trigger fires, then SIGKILL; False if the process ended first."""
    start_rows = _rows(run)
    fired = False
    while proc.poll() is None:
        if trigger == "start":
            fired = True
        elif trigger.startswith("rows+"):
            fired = _rows(run) >= min(start_rows + int(trigger[5:]), EPOCHS)
        elif trigger == "final":
            fired = _rows(run) >= EPOCHS
        if fired:
            break
        time.sleep(0.0005)
    if not fired:
        return False
    if delay:
        time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


@pytest.mark.slow
def test_kill_9_twenty_times_then_resume(tmp_path):
    run = tmp_path / "run"
    log = []
    kills = attempts = 0
    fresh = True
    while kills < len(TRIGGERS):
        attempts += 1
        assert attempts < 2 * len(TRIGGERS), log
        trigger = TRIGGERS[kills]
        args = TRAIN + ["--out", str(run), "--overwrite"] if fresh else [
            "train", "--resume", str(run), "--epochs", str(EPOCHS), "--threads", "1", "--quiet"]
        if trigger[0] == "write":
            proc = subprocess.Popen([sys.executable, "-c", KILL_IN_WRITE, trigger[1], "1", trigger[2], *args],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            proc.wait()
            killed = proc.returncode == -signal.SIGKILL
        else:
            proc = _popen(args)
            killed = _wait_and_kill(proc, run, *trigger)
        err = proc.stderr.read()
        proc.stderr.close()
        if not killed:
            # the process ended before the moment came: it must have finished the run
            assert proc.returncode == 0, err
            state = check_run_dir(run)
            assert state["rows"] == EPOCHS and (run / "metrics.json").exists()
            log.append((trigger, "finished first"))
            fresh = True
            continue
        kills += 1
        if not (run / "config.json").exists():
            log.append((trigger, "killed before config.json"))  # nothing written yet: start again
            fresh = True
            continue
        state = check_run_dir(run)
        log.append((trigger, state))
        manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists() else {}
        if "test_accuracy" in manifest:
            # the kill came after the run's very last write: it is complete, and --resume to the same epoch
            # count rightly refuses; the next process starts a new run
            assert state["rows"] == EPOCHS and (run / "metrics.json").exists()
            fresh = True
            continue
        if state["checkpoint"] == 0:
            code, err = _mlplab(["train", "--resume", str(run), "--epochs", str(EPOCHS)])
            assert code == 2 and err.count("\n") == 1 and "no checkpoint" in err and "--overwrite" in err, err
            fresh = True
        else:
            fresh = False
    # the last kill's run finishes when resumed (or, without a checkpoint, when started again)
    if fresh:
        code, err = _mlplab(TRAIN + ["--out", str(run), "--overwrite"])
    else:
        code, err = _mlplab(["train", "--resume", str(run), "--epochs", str(EPOCHS), "--quiet"])
    assert code == 0, err
    state = check_run_dir(run)
    assert state["rows"] == EPOCHS and json.loads((run / "metrics.json").read_text())["n_test"] == 360
    assert state["tmp"] == 0, _tmp_files(run)  # leftovers of killed writes are cleaned when a run is resumed
    hits = [entry for entry in log if isinstance(entry[1], dict)]
    assert len(hits) >= 15, log  # most kills landed inside training, not during start-up
    assert sum(1 for entry in log if entry[1] == "finished first") <= 5, log
    print("kill -9 log:", *log, sep="\n  ")


# --- deterministic kills inside a write -----------------------------------------------------------------
KILL_IN_WRITE = textwrap.dedent("""
    import os, signal, sys
    import mlplab.atomic as atomic

    target, nth, where = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    seen = 0
    real_fsync, real_fdopen = os.fsync, os.fdopen

    def _is_target(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        return name.startswith("." + target + ".") and name.endswith(".tmp")

    def fsync(fd):
        global seen
        real_fsync(fd)
        if where == "before-rename" and _is_target(fd):
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    class HalfWriter:
        def __init__(self, fh):
            self.fh = fh
        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        def __getattr__(self, name):
            return getattr(self.fh, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    def fdopen(fd, *args, **kw):
        global seen
        fh = real_fdopen(fd, *args, **kw)
        if where == "mid-write" and _is_target(fd):
            seen += 1
            if seen == nth:
                return HalfWriter(fh)
        return fh

    os.fsync, atomic.os.fdopen = fsync, fdopen
    from mlplab.cli import main
    main(sys.argv[4:])
""")


@pytest.fixture
def keep_torch_threads():
    """resume_run applies the run's --threads 1 to this process; put the test process's setting back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("target, nth, where", [
    ("last.safetensors", 2, "mid-write"),       # half of epoch 2's checkpoint is on disk under a temp name
    ("history.csv", 3, "before-rename"),        # the last epoch is in the checkpoint only: resume finishes the run
    ("model.safetensors", 1, "before-rename"),  # all data fsynced, not yet renamed
])
def test_kill_inside_a_write_keeps_the_previous_file(tmp_path, keep_torch_threads, target, nth, where):
    from mlplab.runs.session import resume_run

    run = tmp_path / "run"
    args = [sys.executable, "-c", KILL_IN_WRITE, target, str(nth), where, *train_args(3),
            "--out", str(run)]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = _tmp_files(run)
    assert len(leftovers) == 1 and leftovers[0].name.startswith("." + target + "."), leftovers
    state = check_run_dir(run)
    expected_ckpt = nth - 1 if target == "last.safetensors" else nth
    assert state["checkpoint"] == expected_ckpt
    if state["checkpoint"] == 0:
        with pytest.raises(MlplabError, match="no checkpoint"):
            resume_run(run, epochs=3)
        return
    assert resume_run(run, epochs=3).metrics is not None
    assert check_run_dir(run) == {"rows": 3, "checkpoint": 3, "tmp": 0}


# --- full disk -------------------------------------------------------------------------------------------
def test_full_disk_during_a_checkpoint_is_one_error_and_keeps_the_previous_one(tmp_path, monkeypatch):
    from mlplab.runs.config import TrainOptions
    from mlplab.runs.session import resume_run, train_run

    opts = TrainOptions.from_mapping(dict(data="digits", model=SPEC, epochs=3, batch_size=64, seed=1))
    run = tmp_path / "run"
    real_fsync = os.fsync
    writes = []

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(".last.safetensors."):
            writes.append(name)
            if len(writes) == 2:  # epoch 2's checkpoint: the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(MlplabError) as info:
        train_run(opts, run)
    monkeypatch.undo()
    message = str(info.value)
    assert message.startswith("disk full while writing ") and "last.safetensors" in message
    assert "\n" not in message and "previous version of the file is intact" in message
    assert check_run_dir(run) == {"rows": 1, "checkpoint": 1, "tmp": 0}
    resumed = resume_run(run)
    assert [r["epoch"] for r in resumed.history.rows] == [1, 2, 3]


def test_full_disk_in_the_cli_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from mlplab.cli import main

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(SystemExit) as info:
        main(train_args(1) + ["--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith("mlplab: error: disk full while writing")


# --- Ctrl-C ---------------------------------------------------------------------------------------------
def test_ctrl_c_stops_cleanly_and_resumes_to_the_uninterrupted_history(tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    proc = _popen(TRAIN + ["--out", str(run)])
    while proc.poll() is None and _rows(run) < 2:
        time.sleep(0.001)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait() == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted in epoch" in lines[0] and "Traceback" not in err
    assert f"mlplab train --resume {run} --epochs {EPOCHS}" in lines[0]  # the real command, not a placeholder
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    state = check_run_dir(run)
    assert state["checkpoint"] >= 2 and state["tmp"] == 0
    code, err = _mlplab(["train", "--resume", str(run), "--epochs", str(EPOCHS), "--threads", "1", "--quiet"])
    assert code == 0, err
    code, err = _mlplab(TRAIN + ["--out", str(ref)])
    assert code == 0, err

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(open_run(run).history()) == strip(open_run(ref).history())
    assert (run / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    assert json.loads((run / "metrics.json").read_text()) == json.loads((ref / "metrics.json").read_text())


def test_ctrl_c_in_the_last_epoch_then_resume_to_the_same_epochs_finishes(tmp_path):
    """Interrupted after the final epoch's checkpoint: `--resume RUN --epochs N` with the same N must finish the
    run (final weights, metrics.json), not refuse because the checkpoint already has N epochs."""
    from mlplab.runs.config import TrainOptions
    from mlplab.train.callbacks import Callback
    from mlplab.runs.session import resume_run, train_run

    opts = TrainOptions.from_mapping(dict(data="digits", model=SPEC, epochs=2, batch_size=64, seed=1))

    class CtrlCAtTheEnd(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 1:
                trainer.request_stop()

    res = train_run(opts, tmp_path / "run", callbacks=[CtrlCAtTheEnd()])
    assert res.metrics is None and res.history.interrupted
    assert not (tmp_path / "run/metrics.json").exists()
    done = resume_run(tmp_path / "run", epochs=2)
    assert done.metrics is not None and (tmp_path / "run/metrics.json").exists()
    assert [r["epoch"] for r in done.history.rows] == [1, 2]
    assert json.loads((tmp_path / "run/manifest.json").read_text())["status"] == "finished"
    with pytest.raises(MlplabError, match="already has 2 epochs"):
        resume_run(tmp_path / "run", epochs=2)  # a finished run still asks for more epochs


# --- SIGTERM, SIGHUP and every other way a run ends (issue 19, item 8) ----------------------------------------
@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")])
def test_sigterm_and_sighup_stop_like_ctrl_c_and_the_run_resumes(tmp_path, signum, code, name):
    run = tmp_path / "run"
    proc = _popen(TRAIN + ["--out", str(run)])
    while proc.poll() is None and _rows(run) < 1:
        time.sleep(0.001)
    proc.send_signal(signum)
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait() == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"terminated by {name} in epoch" in lines[0] and "Traceback" not in err
    assert f"mlplab train --resume {run}" in lines[0]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "terminated" and manifest["signal"] == name
    state = check_run_dir(run)
    assert state["checkpoint"] >= 1 and state["tmp"] == 0
    code, err = _mlplab(["train", "--resume", str(run), "--epochs", str(EPOCHS), "--threads", "1", "--quiet"])
    assert code == 0, err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and "signal" not in manifest and len(open_run(run).history()) == EPOCHS


def test_sigterm_outside_training_is_one_line_exit_143(tmp_path):
    """A verb without a training loop (here `evaluate`, stopped while it works) ends with one line, exit 143."""
    from mlplab.cli import main

    def term(*_):
        os.kill(os.getpid(), signal.SIGTERM)

    import mlplab.runs.session as session

    code, err = _mlplab(train_args(1) + ["--out", str(tmp_path / "run")])
    assert code == 0, err
    real = session.evaluate_model
    session.evaluate_model = lambda *a, **k: (term(), real(*a, **k))[1]
    try:
        with pytest.raises(SystemExit) as info:
            main(["evaluate", str(tmp_path / "run"), "--quiet"])
    finally:
        session.evaluate_model = real
    assert info.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # main() put the previous handler back


def test_the_manifest_records_divergence_and_failures(tmp_path, monkeypatch):
    from mlplab.runs.config import TrainOptions
    from mlplab.runs.session import train_run
    from mlplab.train.callbacks import Callback
    from mlplab.train.trainer import TrainingDiverged

    opts = TrainOptions.from_mapping(dict(data="digits", model=SPEC, epochs=3, batch_size=64, lr=1e20))
    with pytest.raises(TrainingDiverged):
        train_run(opts, tmp_path / "nan")
    assert json.loads((tmp_path / "nan/manifest.json").read_text())["status"] == "diverged"

    class Boom(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            raise MlplabError("disk full while writing x")

    opts = TrainOptions.from_mapping(dict(data="digits", model=SPEC, epochs=3, batch_size=64))
    with pytest.raises(MlplabError, match="disk full"):
        train_run(opts, tmp_path / "fail", callbacks=[Boom()])
    manifest = json.loads((tmp_path / "fail/manifest.json").read_text())
    assert manifest["status"] == "failed" and "disk full" in manifest["error"]


# --- one writer per run folder (issue 19, item 1) -----------------------------------------------------------
def test_a_second_writer_is_refused_while_the_first_trains(tmp_path):
    """Two real processes: while one trains RUN, `train --overwrite`, `--resume`, `evaluate`, `embed` and
    `report` on RUN each get one line naming the holder's pid (exit 2) and change nothing; kill -9 of the
    holder frees the folder at once."""
    run = tmp_path / "run"
    code, err = _mlplab(train_args(1) + ["--out", str(run)])
    assert code == 0, err
    slow = ["train", "--resume", str(run), "--epochs", "100000", "--threads", "1", "--quiet"]
    proc = _popen(slow)
    try:
        while proc.poll() is None and _rows(run) < 2:
            time.sleep(0.001)
        assert proc.poll() is None
        before = (run / "config.json").read_bytes()
        for args in (train_args(2) + ["--out", str(run), "--overwrite", "--model", "8:relu,10:softmax"],
                     ["train", "--resume", str(run), "--epochs", "200000", "--quiet"],
                     ["evaluate", str(run), "--quiet"], ["embed", str(run), "--method", "pca", "--n", "50"],
                     ["report", str(run)], ["activations", str(run), "--n", "10"]):
            code, err = _mlplab(args)
            assert code == 2 and err.count("\n") == 1, (args, err)
            assert f"being written by another mlplab process (pid {proc.pid}, resume)" in err, err
        assert (run / "config.json").read_bytes() == before and (run / "checkpoints/last.safetensors").exists()
        assert not (run / "embeddings").exists() and not (run / "report.html").exists()
    finally:
        proc.kill()
        proc.wait()
    proc.stderr.close()
    code, err = _mlplab(["train", "--resume", str(run), "--epochs", str(_rows(run) + 1), "--threads", "1",
                         "--quiet"])
    assert code == 0, err  # kill -9 left no stuck lock


def test_the_lock_is_reentrant_in_one_process_and_names_a_foreign_holder(tmp_path):
    from mlplab.runs.lock import run_lock

    with run_lock(tmp_path / "r", "train", create=True):
        with run_lock(tmp_path / "r", "embed"):  # an experiment trains then embeds in one process
            pass
        holder = subprocess.run([sys.executable, "-c", "from mlplab.runs.lock import run_lock\n"
                                 f"with run_lock({str(tmp_path / 'r')!r}, 'x'): pass"],
                                capture_output=True, text=True)
        assert holder.returncode == 1 and f"pid {os.getpid()}, train" in holder.stderr
    with run_lock(tmp_path / "r", "again"):  # released on exit
        pass


# --- a read-only run folder (issue 19, item 5) -------------------------------------------------------------
def _read_only_mlplab(run: Path, args: list[str]):
    """Run the CLI with RUN read-only: chmod for an ordinary user; root ignores permissions, so for root a
    read-only bind mount in a private mount namespace (skipped where that is not allowed)."""
    cmd = [sys.executable, "-m", "mlplab", *args]
    if os.geteuid() != 0:
        run.chmod(0o555)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            run.chmod(0o755)
        return p.returncode, p.stderr
    import shlex
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("root without unshare: cannot make a read-only folder")
    script = f"mount --bind -o ro {shlex.quote(str(run))} {shlex.quote(str(run))} && exec {shlex.join(cmd)}"
    p = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    if "mount" in p.stderr and "mlplab" not in p.stderr:
        pytest.skip(f"no private read-only mount here: {p.stderr.strip()}")
    return p.returncode, p.stderr


def test_a_read_only_run_gives_one_line_and_reads_still_work(tmp_path):
    run = tmp_path / "run"
    code, err = _mlplab(train_args(1) + ["--out", str(run)])
    assert code == 0, err
    for args in (["activations", str(run), "--n", "10"], ["embed", str(run), "--method", "pca", "--n", "40"],
                 ["evaluate", str(run)], ["report", str(run)],
                 ["activations", str(run), "--n", "10", "--out", str(run / "sub" / "a.npz")]):
        code, err = _read_only_mlplab(run, args)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (args, err)
        assert "Read-only file system" in err or "Permission denied" in err, err
    code, err = _read_only_mlplab(run, ["activations", str(run), "--n", "10", "--out", str(tmp_path / "a.npz")])
    assert code == 0 and (tmp_path / "a.npz").exists(), err
