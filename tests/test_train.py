"""Training loop, runs, resume and the train CLI, on real data (scikit-learn's digits, always offline)."""

import json
import math

import numpy as np
import pytest
import torch

import mlplab
from mlplab.cli import main
from mlplab.runs.config import TrainOptions
from mlplab.errors import MlplabError
from mlplab.runs.folder import open_run
from mlplab.runs.session import resume_run, train_run
from mlplab.train.trainer import TrainingDiverged

SMALL = "128:relu,10:softmax"
DROP = "64:relu,dropout:0.2,10:softmax"


def opts(**kw):
    base = dict(data="digits", model=DROP, optimizer="adam", lr=0.003, batch_size=32, epochs=3, val_split=0.2,
                seed=7)
    base.update(kw)
    return TrainOptions.from_mapping(base)


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def digits():
    return mlplab.load_dataset("digits")


def test_digits_small_net_reaches_97_percent(tmp_path):
    result = train_run(opts(model=SMALL, epochs=40, val_split=0.1, seed=0), tmp_path / "run")
    assert result.metrics["test_accuracy"] >= 0.97
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["n_test"] == 360 and np.array(m["confusion_matrix"]).sum() == 360
    assert np.trace(np.array(m["confusion_matrix"])) / 360 == pytest.approx(m["test_accuracy"])


def test_same_seed_same_history_and_weights(tmp_path):
    a = train_run(opts(), tmp_path / "a")
    b = train_run(opts(), tmp_path / "b")
    assert without_seconds(a.history.rows) == without_seconds(b.history.rows)
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()
    c = train_run(opts(seed=8), tmp_path / "c")
    assert without_seconds(c.history.rows) != without_seconds(a.history.rows)


def test_resume_equals_uninterrupted(tmp_path):
    """Stopped after 3 epochs, resumed to 5 == an uninterrupted 5-epoch run with the same seed."""
    kw = dict(optimizer="sgd", lr=0.05, momentum=0.9)
    full = train_run(opts(epochs=5, **kw), tmp_path / "full")
    train_run(opts(epochs=3, **kw), tmp_path / "part")
    resumed = resume_run(tmp_path / "part", epochs=5)
    assert without_seconds(resumed.history.rows) == without_seconds(full.history.rows)
    assert [r["epoch"] for r in open_run(tmp_path / "part").history()] == [1, 2, 3, 4, 5]
    assert (tmp_path / "part/model.safetensors").read_bytes() == (tmp_path / "full/model.safetensors").read_bytes()


@pytest.mark.parametrize("schedule, early", [("constant", None), ("cosine", "val_loss:3"), ("onecycle", None)])
def test_killed_mid_run_resumes_identically(tmp_path, schedule, early):
    """A run whose process died after epoch 3 (only the files of epoch 3 on disk) resumes exactly, including the
    LR schedule, the optimizer's momentum, the RNG streams and EarlyStopping's state and best weights."""
    o = opts(epochs=6, optimizer="sgd", lr=0.05, momentum=0.9, schedule=schedule, early_stop=early,
             restore_best=early is not None)
    full = train_run(o, tmp_path / "full")

    class Kill(Exception):
        pass

    from mlplab.train.callbacks import Callback

    class DieBeforeEpoch4(Callback):
        def on_epoch_begin(self, trainer, epoch, n_batches):
            if epoch == 3:
                raise Kill

    with pytest.raises(Kill):
        train_run(o, tmp_path / "killed", callbacks=[DieBeforeEpoch4()])
    assert len(open_run(tmp_path / "killed").history()) == 3
    resumed = resume_run(tmp_path / "killed")
    assert without_seconds(resumed.history.rows) == without_seconds(full.history.rows)
    assert resumed.history.restored_epoch == full.history.restored_epoch
    assert resumed.metrics["test_loss"] == full.metrics["test_loss"]
    assert (tmp_path / "killed/model.safetensors").read_bytes() == (tmp_path / "full/model.safetensors").read_bytes()


def test_fit_twice_continues_history(digits):
    model = mlplab.build(DROP, 64, seed=0)
    h1 = mlplab.fit(model, digits.x_train, digits.y_train, epochs=2, batch_size=64, validation_split=0.2)
    h2 = mlplab.fit(model, digits.x_train, digits.y_train, epochs=2, batch_size=64, validation_split=0.2)
    assert h2 is h1 and [r["epoch"] for r in h2.rows] == [1, 2, 3, 4]
    assert h2.epoch == [0, 1, 2, 3] and len(h2.history["val_loss"]) == 4
    df = h2.as_dataframe()
    assert list(df.columns) == ["loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


def test_one_hot_labels_train_like_integer_labels(digits):
    y1 = np.eye(10, dtype=np.float32)[digits.y_train]
    m1, m2 = mlplab.build(SMALL, 64, seed=1), mlplab.build(SMALL, 64, seed=1)
    h1 = mlplab.fit(m1, digits.x_train, digits.y_train, epochs=2, seed=3)
    h2 = mlplab.fit(m2, digits.x_train, y1, epochs=2, seed=3)
    for r1, r2 in zip(h1.rows, h2.rows):
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-5)


def test_divergence_names_epoch_and_batch_and_keeps_last_good_checkpoint(tmp_path):
    o = opts(epochs=3, optimizer="sgd", lr=1e20, model=SMALL)
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite at epoch \d+, batch \d+"):
        train_run(o, tmp_path / "div")
    run = open_run(tmp_path / "div")
    if run.history():  # a finite first epoch was saved: it must still load
        model = run.model()
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_early_stopping_restores_best_weights(tmp_path):
    o = opts(epochs=60, early_stop="val_loss:2", restore_best=True, optimizer="adam", lr=0.01, model=SMALL)
    result = train_run(o, tmp_path / "es")
    h = result.history
    assert h.stopped_early_at is not None and h.stopped_early_at < 60
    best = min(h.rows, key=lambda r: r["val_loss"])
    assert h.restored_epoch == best["epoch"]
    # the saved model is the best epoch's: its validation loss equals the logged best
    run = open_run(tmp_path / "es")
    val = run.split("val")
    from mlplab.model import engine

    loss, _ = engine.evaluate(run.model(), torch.from_numpy(val.x), torch.from_numpy(val.y), "categorical_crossentropy")
    assert loss == pytest.approx(best["val_loss"], rel=1e-5)


# ---- CLI -----------------------------------------------------------------------------------------------------------
def cli(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_cli_train_evaluate_summary_predict(tmp_path, capsys):
    run = tmp_path / "r"
    code, out, err = cli(["train", "--data", "digits", "--model", SMALL, "--epochs", "3", "--out", str(run),
                          "--optimizer", "adam", "--lr", "0.003"], capsys)
    assert code == 0, err
    lines = [l for l in out.splitlines() if l.startswith("Epoch ")]
    assert len(lines) == 3 and lines[0].startswith("Epoch 1/3 - ") and " - val_accuracy: " in lines[0]
    assert "Test accuracy:" in out
    code, out, err = cli(["evaluate", str(run)], capsys)
    assert code == 0 and "Per class" in out and "Confusion matrix" in out
    code, out, _ = cli(["summary", str(run)], capsys)
    assert code == 0 and "Total params: 9,610" in out  # 64*128+128 + 128*10+10
    np.save(tmp_path / "eight.npy", mlplab.load_dataset("digits").x_test[0])
    code, out, err = cli(["predict", str(run), str(tmp_path / "eight.npy")], capsys)
    assert code == 0, err
    assert "top 1" in out


def test_cli_resume_continues_to_epochs(tmp_path, capsys):
    run = tmp_path / "r"
    assert cli(["train", "--data", "digits", "--model", SMALL, "--epochs", "2", "--out", str(run), "-q"], capsys)[0] == 0
    code, out, _ = cli(["train", "--resume", str(run), "--epochs", "4"], capsys)
    assert code == 0 and "Epoch 3/4" in out and "Epoch 4/4" in out and "Epoch 2/4" not in out
    assert [r["epoch"] for r in open_run(run).history()] == [1, 2, 3, 4]
    code, _, err = cli(["train", "--resume", str(run), "--epochs", "4"], capsys)
    assert code == 2 and "already has 4 epochs" in err


@pytest.mark.parametrize("args, message", [
    (["--model", "512:relux,10:softmax"], "relux"),
    (["--model", "64:relu,dropout:1.5,10:softmax"], "dropout"),
    (["--model", "0:relu,10:softmax"], "0"),
    (["--model", ""], "empty"),
    (["--model", "64:relu,,10:softmax"], ""),
    (["--model", "64:relu,5:softmax"], "5 units but the data has 10 classes"),
    (["--lr", "0"], "lr must be a number > 0"),
    (["--lr", "-1"], "lr must be a number > 0"),
    (["--batch-size", "0"], "batch_size must be an integer > 0"),
    (["--epochs", "0"], "epochs must be an integer >= 1"),
    (["--optimizer", "adagrad"], "choose one of: sgd, adam, adamw, rmsprop"),
    (["--val-split", "1.5"], "val_split must be in [0, 1)"),
    (["--early-stop", "val_loss"], "METRIC:PATIENCE"),
    (["--data", "nosuchdata"], "nosuchdata"),
    (["--lr", "abc"], "abc"),
    (["--device", "tpu"], "cpu, cuda"),
    (["--threads", "100000"], "threads must be a whole number from 1 to"),  # was a torch traceback
    (["--threads", "0"], "threads must be a whole number from 1 to"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    run = tmp_path / "bad"
    base = ["train", "--data", "digits", "--model", SMALL, "--epochs", "1", "--out", str(run)]
    code, out, err = cli(base + args, capsys)
    assert code == 2
    assert err.startswith("mlplab: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert not (run / "model.safetensors").exists()


def test_existing_run_is_not_clobbered(tmp_path, capsys):
    run = tmp_path / "r"
    assert cli(["train", "--data", "digits", "--model", SMALL, "--epochs", "1", "--out", str(run), "-q"], capsys)[0] == 0
    before = (run / "model.safetensors").read_bytes()
    code, _, err = cli(["train", "--data", "digits", "--model", SMALL, "--epochs", "1", "--out", str(run)], capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert (run / "model.safetensors").read_bytes() == before
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    code, _, err = cli(["train", "--data", "digits", "--model", SMALL, "--out", str(other), "--overwrite"], capsys)
    assert code == 2 and "not an mlplab run" in err and (other / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize("corrupt", ["config", "weights", "missing"])
def test_corrupt_runs_are_one_line_errors(tmp_path, capsys, corrupt):
    run = tmp_path / "r"
    assert cli(["train", "--data", "digits", "--model", SMALL, "--epochs", "1", "--out", str(run), "-q"], capsys)[0] == 0
    if corrupt == "config":
        (run / "config.json").write_text("{not json")
    elif corrupt == "weights":
        (run / "model.safetensors").write_bytes(b"\x00" * 20)
    else:
        run = tmp_path / "nothing-here"
    code, _, err = cli(["evaluate", str(run)], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


def test_config_file_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('data = "digits"\nmodel = "32:relu,10:softmax"\nepochs = 1\nlr = 0.02\n')
    run = tmp_path / "r"
    code, _, err = cli(["train", "--config", str(cfg), "--lr", "0.03", "--out", str(run), "-q"], capsys)
    assert code == 0, err
    conf = json.loads((run / "config.json").read_text())
    assert conf["model"]["spec"] == "32:relu,10:softmax" and conf["train"]["lr"] == 0.03
    cfg.write_text('data = "digits"\nlearning_rate = 0.1\n')
    code, _, err = cli(["train", "--config", str(cfg), "--out", str(tmp_path / "r2")], capsys)
    assert code == 2 and "unknown key 'learning_rate'" in err
    cfg.write_text('data = "digits"\nepochs = "ten"\n')
    code, _, err = cli(["train", "--config", str(cfg), "--out", str(tmp_path / "r2")], capsys)
    assert code == 2 and "epochs must be an integer" in err


# ---- issue 19: surprises -------------------------------------------------------------------------------------------
def test_ctrl_c_prints_the_real_resume_command_with_the_target_epochs(tmp_path, capsys, monkeypatch):
    from mlplab.cli.progress import ConsoleProgress

    def stop_after_first_epoch(self, trainer, epoch, logs):
        trainer.request_stop()  # what the first Ctrl-C does, at the end of epoch 1

    monkeypatch.setattr(ConsoleProgress, "on_epoch_end", stop_after_first_epoch)
    run = tmp_path / "my run"
    code, _, err = cli(["train", "--data", "digits", "--model", SMALL, "--epochs", "7", "--out", str(run)], capsys)
    assert code == 130
    assert "1 whole epoch is saved" in err
    assert f"Continue with: mlplab train --resume '{run}' --epochs 7" in err and "--epochs N" not in err


def test_resume_with_overwrite_is_refused(tmp_path, capsys):
    run = tmp_path / "r"
    assert cli(["train", "--data", "digits", "--model", SMALL, "--epochs", "1", "--out", str(run), "-q"], capsys)[0] == 0
    before = (run / "history.csv").read_text()
    code, _, err = cli(["train", "--resume", str(run), "--epochs", "2", "--overwrite"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--overwrite" in err
    assert (run / "history.csv").read_text() == before
    code, _, err = cli(["summary", str(run), "--input", "784"], capsys)  # the same class: a flag silently ignored
    assert code == 2 and "--input goes with --model SPEC" in err


def test_labels_with_gaps_point_at_the_labels_not_a_huge_spec(tmp_path, capsys, digits):
    data = tmp_path / "gaps.npz"
    np.savez(data, x_train=digits.x_train, y_train=digits.y_train * 100, x_test=digits.x_test,
             y_test=digits.y_test * 100)
    code, _, err = cli(["train", "--data", str(data), "--model", SMALL, "--epochs", "1", "--out",
                        str(tmp_path / "r")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "10 distinct values (0, 100, 200, 300, ..., 900)" in err and "891 classes have no samples" in err
    assert "renumber the labels 0..9" in err
    model = mlplab.build(SMALL, 64)
    with pytest.raises(MlplabError, match="891 classes have no samples"):
        mlplab.fit(model, digits.x_train, digits.y_train * 100)


def test_fit_again_without_settings_keeps_the_models_optimizer(digits):
    model = mlplab.build(SMALL, 64, seed=0)
    mlplab.fit(model, digits.x_train, digits.y_train, epochs=1, optimizer="adam", lr=0.003, batch_size=32)
    trainer = model._mlplab_trainer
    mlplab.fit(model, digits.x_train, digits.y_train, epochs=1)
    assert model._mlplab_trainer is trainer  # same optimizer object: its Adam moments carry over
    assert isinstance(trainer.optimizer, torch.optim.Adam) and trainer.optimizer.param_groups[0]["lr"] == 0.003
    assert trainer.batch_size == 32 and len(trainer.history) == 2
    mlplab.fit(model, digits.x_train, digits.y_train, epochs=1, lr=0.001)  # one change, the rest kept
    assert isinstance(model._mlplab_trainer.optimizer, torch.optim.Adam)
    assert model._mlplab_trainer.optimizer.param_groups[0]["lr"] == 0.001 and len(model._mlplab_trainer.history) == 3


def test_fit_again_never_redraws_the_validation_split(digits):
    model = mlplab.build(SMALL, 64, seed=0)
    n = len(digits.y_train)
    mlplab.fit(model, digits.x_train, digits.y_train, epochs=1, validation_split=0.2)
    with pytest.raises(MlplabError, match=r"validation_split=0.2 \(seed 0\).*trained on") as info:
        mlplab.fit(model, digits.x_train, digits.y_train, epochs=1, validation_split=0.3)
    assert "\n" not in str(info.value) and len(model._mlplab_trainer.history) == 1
    # a new seed changes the optimizer's trainer, not the validation samples drawn by the first call
    mlplab.fit(model, digits.x_train, digits.y_train, epochs=1, validation_split=0.2, seed=5)
    assert model._mlplab_trainer.validation_draw == (0.2, 0, n) and len(model._mlplab_trainer.history) == 2


def test_open_run_history_is_a_history_that_still_reads_like_rows(tmp_path):
    res = train_run(opts(model=SMALL, epochs=30, early_stop="val_loss:1", restore_best=True), tmp_path / "r")
    h = open_run(tmp_path / "r").history()
    assert isinstance(h, mlplab.History)
    assert h.rows == res.history.rows and h.epochs_done == res.history.epochs_done
    assert h.stopped_early_at == res.history.stopped_early_at is not None
    assert h.restored_epoch == res.history.restored_epoch
    assert h.history["val_loss"] == [r["val_loss"] for r in res.history.rows]  # the Keras view
    assert [r["epoch"] for r in h] == list(range(1, h.epochs_done + 1)) and h[-1] == h.rows[-1]


def test_piped_tables_are_not_wrapped_at_80_columns():
    import io

    from mlplab.cli.console import make_console
    from mlplab.cli.train_cmd import _print_metrics

    names = [f"garment-{i}" for i in range(12)]
    cm = [[int(i == j) * 100 + j for j in range(12)] for i in range(12)]
    m = {"test_loss": 0.5, "test_accuracy": 0.9, "macro_f1": 0.9, "n_test": 1200, "data": "x", "class_names": names,
         "confusion_matrix": cm, "per_class": [{"class": n, "precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 100}
                                               for n in names]}
    out = io.StringIO()  # not a terminal, as when piped
    _print_metrics(m, make_console(file=out))
    lines = out.getvalue().splitlines()
    header = next(l for l in lines if "garment" in l and "┃" in l and l.count("garment") > 1)
    assert header.count("garmen") == 12  # every column header on one line (names cut to 7 characters)
    rows = [l for l in lines if l.startswith("│ garmen") and l.count("│") == 14]
    assert len(rows) == 12 and max(len(l) for l in lines) > 80
    assert "Confusion matrix (rows: true, columns: predicted)" in lines
def test_threads_are_bounded_by_the_usable_cpus(tmp_path, capsys):
    """--threads 10000 used to be accepted (and 8x slower); the bound is the CPUs this process may use."""
    from mlplab.train.trainer import Trainer, usable_cpus

    top = usable_cpus()
    base = ["train", "--data", "digits", "--model", SMALL, "--epochs", "1", "--out", str(tmp_path / "r"), "-q"]
    code, _, err = cli(base + ["--threads", str(top + 1)], capsys)
    assert code == 2 and f"from 1 to {top}" in err and err.count("\n") == 1
    with pytest.raises(MlplabError, match=f"from 1 to {top}"):
        Trainer(mlplab.build(SMALL, 64), threads=10_000)
    with pytest.raises(MlplabError, match="threads"):
        opts(threads=top + 1).validate()
    n = torch.get_num_threads()
    try:
        assert cli(base + ["--threads", str(top)], capsys)[0] == 0
    finally:
        torch.set_num_threads(n)


# --- one definition of accuracy (issue 19, item 4) -----------------------------------------------------------
@pytest.fixture
def two_class_npz(tmp_path, digits):
    keep_tr, keep_te = digits.y_train < 2, digits.y_test < 2
    path = tmp_path / "two.npz"
    np.savez(path, x_train=digits.x_train[keep_tr], y_train=digits.y_train[keep_tr],
             x_test=digits.x_test[keep_te], y_test=digits.y_test[keep_te])
    return path


def test_one_sigmoid_unit_trains_two_classes_with_one_accuracy(tmp_path, two_class_npz):
    """1:sigmoid + binary cross-entropy on two classes was refused; now it trains, and the per-epoch, validation,
    test and `evaluate` accuracies all use Keras's binary accuracy (p > 0.5)."""
    from mlplab.model import engine
    from mlplab.train.predict import evaluate

    res = train_run(opts(data=str(two_class_npz), model="4:relu,1:sigmoid", loss="binary_crossentropy", epochs=2,
                         optimizer="sgd", lr=0.05, val_split=0.25), tmp_path / "run")
    run = open_run(tmp_path / "run")
    model = run.model()
    test = run.split("test")
    p = mlplab.predict(model, test.x)[:, 0]
    expected = float(((p > 0.5).astype(np.int64) == test.y).mean())
    assert 0.3 < expected and res.metrics["test_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert len(res.metrics["confusion_matrix"]) == 2 and sum(map(sum, res.metrics["confusion_matrix"])) == len(p)
    assert evaluate(model, test.x, test.y, loss="binary_crossentropy")["test_accuracy"] == pytest.approx(expected)
    xt = torch.from_numpy(test.x)
    assert engine.evaluate(model, xt, torch.from_numpy(test.y), "binary_crossentropy")[1] == pytest.approx(expected)
    val = run.split("val")
    pv = mlplab.predict(model, val.x)[:, 0]
    assert run.history()[-1]["val_accuracy"] == pytest.approx(float(((pv > 0.5) == val.y).mean()))


@pytest.mark.parametrize("spec, loss, message", [
    ("4:relu,1:softmax", "categorical_crossentropy", "a softmax over one unit always outputs 1.0"),
    ("4:relu,1:softmax", "binary_crossentropy", "a softmax over one unit always outputs 1.0"),
    ("4:relu,1:linear", "mse", "1:sigmoid"),
    ("4:relu,1:sigmoid", "binary_crossentropy", "data has 10 classes"),
])
def test_degenerate_one_unit_outputs_are_one_line(tmp_path, capsys, two_class_npz, spec, loss, message):
    data = "digits" if "10 classes" in message else str(two_class_npz)
    code, _, err = cli(["train", "--data", data, "--model", spec, "--loss", loss, "--epochs", "1",
                        "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    y = np.array([0, 1, 2, 3]) if "10 classes" in message else np.array([0, 1, 0, 1])
    with pytest.raises(MlplabError, match="one unit|1:sigmoid|labels must be in \\[0, 2\\)"):
        mlplab.fit(mlplab.build(spec, 64), np.zeros((4, 64), np.float32), y, loss=loss)
