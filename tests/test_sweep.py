"""mlplab sweep end to end: a digits sweep with two worker processes, its winner exported and trained again,
continuing a study, kill -9 of a trial's process and Ctrl-C of the sweep, a real local Ray head, the page in
headless Chromium, and hostile search spaces (one line, exit 2)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))

DIGITS_SWEEP = """
[sweep]
data = "digits"
trials = 8
seed = 0
pruner = "median"

[fixed]
epochs = 20
batch_size = 32
val_split = 0.2
optimizer = "adam"
depth = 1
output = "10:softmax"

[space]
lr = {low = 0.002, high = 0.02, log = true}
width = {choices = [128, 256]}
dropout = {low = 0.0, high = 0.3}
"""


def mlplab(*args, check=True, **kw):
    proc = subprocess.run([sys.executable, "-m", "mlplab", *map(str, args)], env=ENV, capture_output=True,
                          text=True, **kw)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def study_of(out):
    return optuna.load_study(study_name="mlplab", storage=f"sqlite:///{Path(out) / 'study.db'}")


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "sweep.toml").write_text(DIGITS_SWEEP)
    out = folder / "out"
    proc = mlplab("sweep", folder / "sweep.toml", "--out", out, "--workers", 2, "--export", folder / "best.toml")
    return folder, out, proc


def test_digits_sweep_two_workers_finds_97_percent(digits_sweep):
    folder, out, proc = digits_sweep
    study = study_of(out)
    trials = study.get_trials()
    assert len(trials) == 8
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") >= 3 and "FAIL" not in states and "RUNNING" not in states
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # two worker processes shared the study
    # two workers with one seed would draw the same start-up values; each draws its own
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 8
    for t in trials:  # every trial is a full run folder, with its per-epoch reports in the study
        run = out / "trials" / f"{t.number:04d}"
        assert (run / "metrics.json").exists() and (run / "model.safetensors").exists()
        assert len(t.intermediate_values) == len((run / "history.csv").read_text().splitlines()) - 1
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert best.user_attrs["test_accuracy"] >= 0.97
    metrics = json.loads((out / "trials" / f"{best.number:04d}" / "metrics.json").read_text())
    assert metrics["test_accuracy"] == best.user_attrs["test_accuracy"]
    assert "best: trial" in proc.stdout


def test_exported_winner_is_a_train_config(digits_sweep, tmp_path):
    folder, out, _ = digits_sweep
    best = study_of(out).best_trial
    text = (folder / "best.toml").read_text()
    assert f"lr = {best.params['lr']!r}" in text
    mlplab("train", "--config", folder / "best.toml", "--epochs", 1, "--out", tmp_path / "run", "--quiet")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["lr"] == best.params["lr"]
    assert config["train"]["optimizer"] == "adam"
    assert config["model"]["spec"] == best.user_attrs["options"]["model"]
    assert config["model"]["spec"].startswith(f"{best.params['width']}:relu")


def test_status_and_continuing_the_study(digits_sweep):
    folder, out, _ = digits_sweep
    status = mlplab("sweep", "--status", out)
    assert status.stdout.startswith("8 trials:")
    assert len([line for line in status.stdout.splitlines()[1:] if line.strip()[:1].isdigit()]) == 8
    # the same command again: nothing left to do at 8; with --trials 9, exactly one more trial
    mlplab("sweep", folder / "sweep.toml", "--out", out, "--quiet")
    assert len(study_of(out).get_trials()) == 8
    mlplab("sweep", folder / "sweep.toml", "--out", out, "--trials", 9, "--quiet")
    assert len(study_of(out).get_trials()) == 9
    # another search space on the same study is refused, not mixed in
    (folder / "other.toml").write_text(DIGITS_SWEEP.replace("0.02", "0.1"))
    proc = mlplab("sweep", folder / "other.toml", "--out", out, check=False)
    assert proc.returncode == 2 and "another search space" in proc.stderr


def _wait(predicate, what, timeout=240):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _running_trial(out):
    if not (out / "study.db").exists():
        return None
    try:
        running = [t for t in study_of(out).get_trials() if t.state.name == "RUNNING" and "pid" in t.user_attrs]
    except Exception:  # noqa: BLE001  (the study is being created)
        return None
    for t in running:
        history = out / "trials" / f"{t.number:04d}" / "history.csv"
        if history.exists() and len(history.read_text().splitlines()) >= 2:  # mid-training
            return t
    return None


def test_kill_9_of_a_trial_process_then_ctrl_c_then_resume(tmp_path):
    (tmp_path / "s.toml").write_text("""
[sweep]
data = "digits"
trials = 3
pruner = "none"
[fixed]
epochs = 100
val_split = 0.2
model = "16:relu,10:softmax"
[space]
lr = {low = 0.001, high = 0.01, log = true}
""")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "mlplab", "sweep", tmp_path / "s.toml", "--out", out],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = _wait(lambda: _running_trial(out), "a trial mid-training")
        os.kill(first.user_attrs["pid"], signal.SIGKILL)
        second = _wait(lambda: (t := _running_trial(out)) is not None and t.number != first.number and t,
                       "the next trial, in a new worker")
        assert second.user_attrs["pid"] != first.user_attrs["pid"]
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the running trial stops cleanly and is queued again
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "continue it with the same command" in err
    trials = {t.number: t for t in study_of(out).get_trials()}
    assert trials[first.number].state.name == "FAIL"
    assert "died (exit code -9)" in trials[first.number].user_attrs["fail_reason"]
    assert trials[second.number].state.name == "FAIL" and trials[second.number].user_attrs["interrupted"]
    waiting = [t for t in trials.values() if t.state.name == "WAITING"]
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == trials[second.number].params
    # the interrupted run folder was stopped at a batch boundary: it is a valid run, resumable on its own
    manifest = json.loads((out / "trials" / f"{second.number:04d}" / "manifest.json").read_text())
    assert "test_accuracy" not in manifest
    # the study refuses another search (epochs changed); the same command continues: the requeued values first,
    # up to --trials counted trials (the killed one counts, the interrupted one does not)
    (tmp_path / "t.toml").write_text((tmp_path / "s.toml").read_text().replace("epochs = 100", "epochs = 2"))
    again = mlplab("sweep", tmp_path / "t.toml", "--out", out, check=False)
    assert again.returncode == 2 and "another search space" in again.stderr
    mlplab("sweep", tmp_path / "s.toml", "--out", out, "--trials", 2, "--quiet")
    trials = study_of(out).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE"]
    assert trials[2].params == trials[second.number].params and trials[2].user_attrs["epochs"] == 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    port = _free_port()
    # --block keeps `ray start` in the foreground as the parent of the head's processes: stopping its process
    # group stops exactly this head (`ray stop` would stop every Ray on the machine)
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                             "--port", str(port), "--num-cpus", "2", "--include-dashboard=false",
                             "--disable-usage-stats"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(lambda: subprocess.run([str(ray_bin), "status", "--address", f"127.0.0.1:{port}"], env=ENV,
                                     capture_output=True).returncode == 0, "the Ray head", timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        # a graceful stop takes ~30 s (Ray's own shutdown timeouts); this head holds nothing worth keeping
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)


def test_ray_head_runs_four_trials_into_the_study(ray_head, tmp_path):
    (tmp_path / "s.toml").write_text(DIGITS_SWEEP.replace("epochs = 20", "epochs = 5"))
    out = tmp_path / "out"
    mlplab("sweep", tmp_path / "s.toml", "--out", out, "--trials", 4, "--ray", ray_head, "--quiet")
    trials = study_of(out).get_trials()
    assert len(trials) == 4 and all(t.user_attrs.get("ray") for t in trials)
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    for t in trials:
        run = out / "trials" / f"{t.number:04d}"
        history = (run / "history.csv").read_text().splitlines()
        assert len(history) - 1 == len(t.intermediate_values)  # reported each epoch through the actor
        assert json.loads((run / "metrics.json").read_text())["test_accuracy"] == t.user_attrs["test_accuracy"]
    assert (out / "sweep.html").exists()


@pytest.mark.browser
def test_sweep_page_in_headless_chromium(digits_sweep, tmp_path):
    from test_report_browser import CHROMIUM, chromium, console_problems, page_requests

    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed")
    _, out, _ = digits_sweep
    page = out / "sweep.html"
    html = page.read_text()
    assert html.count("<script>") == 2  # BokehJS once, then the page's own script
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var roots = Array.prototype.slice.call(document.querySelectorAll('.bokeh-root')).filter(function (r) {
    return !!r.firstElementChild && !!r.firstElementChild.shadowRoot; }).length;
  var th = document.querySelectorAll('#trials th')[2]; th.click(); th.click();
  var first = document.querySelector('#trials tbody tr td:nth-child(3)').getAttribute('data-key');
  var d = document.createElement('div'); d.id = 'check'; d.setAttribute('data-roots', roots);
  d.setAttribute('data-first', first); document.body.appendChild(d); }, 500); });
</script></body>"""))
    proc, netlog = chromium(["--virtual-time-budget=8000", "--dump-dom", probe.resolve().as_uri()], tmp_path, "s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_problems(proc.stderr) == []
    assert page_requests(netlog) == []
    import re

    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', re.search(r'<div id="check"([^>]*)>', proc.stdout)[1]))
    assert attrs["roots"] == "4"  # history, parallel coordinates, importances, curves all drawn
    best = max(t.value for t in study_of(out).get_trials() if t.value is not None)
    assert float(attrs["first"]) == pytest.approx(best)  # sorted descending by the objective


BAD_SPACES = [
    ("[space]\nlrr = {low = 0.1, high = 1.0}", "unknown option 'lrr'; allowed: "),
    ("[space]\nlr = {low = 0.5, high = 0.1}", "low 0.5 > high 0.1"),
    ("[space]\nlr = {low = 0.0, high = 0.1, log = true}", "a log range needs low > 0"),
    ("[space]\nweight_decay = {low = -1.0, high = 1.0}", "weight_decay must be >= 0"),
    ("[space]\nweight_decay = {low = -1.0, high = 1.0, log = true}", "a log range needs low > 0"),
    ("[space]\nlr = {low = 'a', high = 0.1}", "lr must be a finite number"),
    ("[space]\noptimizer = {choices = []}", "choices is empty"),
    ("[space]\noptimizer = {choices = ['sgd', 'lbfgs']}", "unknown optimizer 'lbfgs'; choose one of"),
    ("[space]\nmomentum = {low = 0.0, high = 1.0}", "momentum must be in [0, 1)"),
    ("[space]\nbatch_size = {low = 1.5, high = 64}", "batch_size must be an integer"),
    ("[space]\nlr = 0.1", "must be a table"),
    ("[space]\nlr = {low = 0.1}", "needs both low and high"),
    ("[space]\nlr = {low = 0.1, high = 0.2, logg = true}", "unknown key 'logg'"),
    ("[space]\ndevice = {choices = ['cpu']}", "'device' cannot be searched"),
    ("[space]\ndropout = {low = 0.0, high = 1.0}", "dropout must be in [0, 1)"),
    ("[space]\nwidth = {choices = [0, 64]}", "width must be an integer from 1"),
    ("[space]\nmodel = {choices = ['64:relu,dropout:0.2']}", "the last layer must be dense"),
    ("[sweep]\nobjective = 'accuracy'\n[space]\nlr = {low = 0.1, high = 0.2}", "unknown objective 'accuracy'"),
    ("[fixed]\nval_split = 0.0\n[space]\nlr = {low = 0.1, high = 0.2}", "needs validation data"),
    ("[space]\n", "[space] is empty"),
    ("[space\nlr = 1", "is not valid TOML"),
]


@pytest.mark.parametrize("text, message", BAD_SPACES)
def test_bad_search_spaces_one_line_exit_2(text, message, tmp_path, capsys):
    from mlplab.cli import main

    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["sweep", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "out"), "--data", "digits"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("mlplab: error: ") and message in err, err
    assert not (tmp_path / "out").exists()  # nothing written for a refused file


def test_model_keys_build_the_spec_with_input_dropout():
    from mlplab.runs.sweep_space import model_spec

    assert model_spec({"input_dropout": 0.1, "depth": 2, "width": 512, "dropout": 0.2, "dropout_1": 0.3}) == \
        "dropout:0.1,512:relu,dropout:0.3,512:relu,dropout:0.2,10:softmax"
    assert model_spec({"lr": 0.1}) is None


def test_options_that_do_not_apply_are_not_drawn():
    from mlplab.runs.sweep import suggest
    from mlplab.runs.sweep_space import parse_sweep

    spec = parse_sweep({"space": {"optimizer": {"choices": ["adam", "sgd"]}, "momentum": {"low": 0.1, "high": 0.9},
                                  "nesterov": {"choices": [True, False]}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        values = suggest(trial, spec)
        seen.add(values["optimizer"])
        if values["optimizer"] == "adam":
            assert "momentum" not in trial.params and "nesterov" not in trial.params
        else:
            assert "momentum" in trial.params and "nesterov" in trial.params
        study.tell(trial, 0.5)
    assert seen == {"adam", "sgd"}


def test_unreachable_ray_address_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    from mlplab.cli import main

    (tmp_path / "s.toml").write_text(DIGITS_SWEEP)
    with socket.socket() as s:  # a port that nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(SystemExit) as info:
            main(["sweep", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"), "--ray", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "cannot reach the Ray cluster" in err
