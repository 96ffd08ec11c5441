"""Experiment files: validation with key paths, and a small experiment run end to end on digits."""

import json

import pytest

from mlplab.cli import main
from mlplab.errors import MlplabError
from mlplab.runs.experiment import load_experiment

SMALL = """
name = "tiny"
data = "digits"
[defaults]
model = "32:relu,dropout:0.2,10:softmax"
optimizer = "adam"
lr = 0.003
batch_size = 64
seed = 1

[[stage]]
kind = "train"
name = "a"
note = "first <b>run</b>"
epochs = 2
[[stage]]
kind = "continue"
run = "a"
epochs = 3
[[stage]]
kind = "train"
name = "b"
epochs = 3
early_stop = "val_loss:1"
[[stage]]
kind = "embed"
run = "b"
layers = ["dense_1", "dense_2"]
methods = ["pca"]
n = 200
[[stage]]
kind = "report"
[[stage]]
kind = "compare"
title = "tiny comparison"
"""


def write(tmp_path, text):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("patch, message", [
    (('lr = 0.003', 'lr = "fast"'), "defaults: lr must be a finite number"),
    (('epochs = 2', 'epocks = 2'), "stage[1]: unknown key 'epocks'"),
    (('kind = "continue"', 'kind = "resume"'), "stage[2].kind must be one of"),
    (('run = "a"', 'run = "zzz"'), "stage[2].run 'zzz' is not the name of an earlier train stage"),
    (('name = "b"', 'name = "a"'), "stage[3].name 'a' is used by an earlier stage"),
    (('name = "a"', 'name = "../escape"'), "plain folder name"),
    (('n = 200', 'n = "many"'), "stage[4].n must be an integer"),
    (('name = "tiny"', 'name = "tiny"\ncolour = "red"'), "unknown key 'colour'"),
    (('[defaults]', '[defaults]\nlearning_rate = 1'), "defaults: unknown key 'learning_rate'"),
    (('epochs = 2', 'epochs = 2\n[[stage'), "not valid TOML"),
])
def test_bad_files_name_the_key_path(tmp_path, patch, message):
    path = write(tmp_path, SMALL.replace(*patch, 1))
    with pytest.raises(MlplabError) as err:
        load_experiment(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_file_exit_2(tmp_path, capsys):
    path = write(tmp_path, SMALL.replace("epochs = 2", "epochs = -2", 1))
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("mlplab: error: ") and "stage[1]" in err
    assert not (tmp_path / "out").exists()


def test_small_experiment_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(write(tmp_path, SMALL)), "--out", str(out), "-q"])
    captured = capsys.readouterr()
    assert exit_.value.code == 0, captured.err
    # (a) trained 2 epochs, then continued to 3 within the same run and history
    history_a = (out / "a" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history_a[1:]] == ["1", "2", "3"]
    # the embed stage wrote first-vs-last hidden layer maps with quality numbers
    meta = json.loads((out / "b" / "embeddings" / "dense_1+dense_2-pca-n200.json").read_text())
    assert set(meta["layers"]) == {"dense_1", "dense_2"} and meta["n"] == 200
    for layer in meta["layers"].values():
        assert 0.5 < layer["quality"]["knn_accuracy"] <= 1.0
    # reports for each run (notes escaped) and a comparison page linking them
    report_a = (out / "a" / "report.html").read_text()
    assert "first &lt;b&gt;run&lt;/b&gt;" in report_a and "first <b>run</b>" not in report_a
    # only run b has embeddings: its report inlines the explorer page, a's has none
    report_b = (out / "b" / "report.html").read_text()
    assert report_b.count('class="mlplab-explorer"') >= 1 and 'class="mlplab-explorer"' not in report_a
    compare = (out / "compare.html").read_text()
    assert "a/report.html" in compare and "b/report.html" in compare
    assert "report: " in captured.out
    # running again without --overwrite continues: every stage is done, so each is skipped and nothing changes
    before = (out / "a" / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(write(tmp_path, SMALL)), "--out", str(out), "-q"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.count("skipped done in an earlier run") == 6
    assert (out / "a" / "model.safetensors").read_bytes() == before
    # a run folder this experiment did not start is never taken over
    other = write(tmp_path, SMALL.replace('name = "tiny"', 'name = "other"').replace('lr = 0.003', 'lr = 0.002'))
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(other), "--out", str(out), "-q"])
    assert exit_.value.code == 2 and "already exists and its stage changed" in capsys.readouterr().err
    assert (out / "a" / "model.safetensors").read_bytes() == before


def test_shipped_experiment_files_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "experiments"
    exp = load_experiment(root / "notebook.toml")
    assert [s.kind for s in exp.stages] == ["train", "continue", "train", "train", "embed", "embed", "report", "compare"]
    assert exp.stages[0].options["train"].lr == 0.001 and exp.stages[0].options["train"].epochs == 2
    from mlplab.runs.config import load_train_config

    best = load_train_config(root / "fashion-best.toml")
    assert best.model == "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"


# ---- issue 19, item 10: --set, a clamped n, continuing where it stopped; item 17: paths relative to the file --------
@pytest.mark.parametrize("overrides, message", [
    (["epochs"], "expected KEY=VALUE"),
    (["epochs=many"], "defaults: epochs must be an integer (got 'many')"),
    (["colour=red"], "--set colour: not a key of this experiment"),
    (["stage[9].n=3"], "the experiment has stages 1..6"),
    (["stage[4].n=5"], "stage[4].n must be >= 10"),
    (["stage[4].split=dev"], "stage[4].split must be one of: train, val, test"),
    (["methods=[\"tsnee\"]"], "stage[4].methods: unknown method 'tsnee'"),
    (["stage[2].epochs=2"], "stage[2].epochs is 2 but run 'a' already has 2 epochs"),
    (["epochs=5"], "stage[2].epochs is 3 but run 'a' already has 5 epochs"),
])
def test_set_overrides_are_checked_like_the_files_keys(tmp_path, overrides, message):
    with pytest.raises(MlplabError) as err:
        load_experiment(write(tmp_path, SMALL), overrides=overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_set_overrides_reach_every_stage_that_has_the_key(tmp_path):
    exp = load_experiment(write(tmp_path, SMALL), overrides=["epochs=1", "lr=0.5", "n=300", "stage[2].epochs=4",
                                                             "defaults.batch_size=16", 'title=two words'])
    a, cont, b, emb = (s.options for s in exp.stages[:4])
    assert a["train"].epochs == 1 and b["train"].epochs == 1  # b's own `epochs = 3` is overridden too
    assert a["train"].lr == b["train"].lr == 0.5 and a["train"].batch_size == 16
    assert cont["epochs"] == 4 and emb["n"] == 300 and exp.stages[5].options["title"] == "two words"


def test_notebook_experiment_on_digits_clamps_n_with_a_note(tmp_path, capsys):
    from pathlib import Path

    notebook = Path(__file__).resolve().parents[1] / "experiments" / "notebook.toml"
    out = tmp_path / "nb"
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(notebook), "--data", "digits", "--out", str(out), "-q", "--set", "epochs=1",
              "--set", "model=16:relu,10:softmax", "--set", "stage[4].model=16:relu,16:relu,10:softmax",
              "--set", 'methods=["pca"]'])
    captured = capsys.readouterr()
    assert exit_.value.code == 0, captured.err
    assert "mlplab: note: " in captured.err and "stage[5]: n = 1000 but the test split of digits has 360" in captured.err
    # n clamped to the whole split is the default draw, so the map has the default name
    meta = json.loads((out / "c-early-stopping" / "embeddings" / "dense_2-pca.json").read_text())
    assert meta["n"] == 360
    assert [l.split(",")[0] for l in (out / "a-no-dropout" / "history.csv").read_text().splitlines()[1:]] == \
        ["1", "2", "3", "4"]


def test_an_interrupted_experiment_continues_where_it_stopped(tmp_path):
    from mlplab.runs.experiment import run_experiment
    from mlplab.runs.folder import open_run
    from mlplab.train.callbacks import Callback

    class CtrlC(Callback):  # what the first Ctrl-C does: finish the batch, stop, save
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 0:
                trainer.request_stop()

    exp = load_experiment(write(tmp_path, SMALL), overrides=["stage[3].early_stop=val_loss:50"])
    out = tmp_path / "out"
    first = run_experiment(exp, out, callbacks_for=lambda st: [CtrlC()] if st.where.endswith("stage[3]") else [])
    assert [r.stage.where[-8:] for r in first] == ["stage[1]", "stage[2]", "stage[3]"] and first[-1].summary.endswith(
        "interrupted after 1 epochs")
    a_weights = (out / "a" / "model.safetensors").read_bytes()
    again = run_experiment(exp, out)
    assert [r.skipped for r in again] == [True, True, False, False, False, False]
    assert (out / "a" / "model.safetensors").read_bytes() == a_weights
    assert [r["epoch"] for r in open_run(out / "b").history()] == [1, 2, 3]  # resumed, not restarted
    assert open_run(out / "b").metrics() is not None and (out / "b" / "report.html").exists()
    state = json.loads((out / "experiment-state.json").read_text())
    assert [state["stages"][str(i)]["status"] for i in range(1, 7)] == ["done"] * 6
    # --overwrite starts from scratch: every stage runs again
    fresh = run_experiment(exp, out, overwrite=True)
    assert not any(r.skipped for r in fresh)


def test_relative_data_paths_resolve_from_the_files_folder(tmp_path, monkeypatch):
    import numpy as np

    from mlplab.data import load_dataset
    from mlplab.runs.config import load_train_config

    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    ds = load_dataset("digits")
    np.savez(folder / "data" / "d.npz", x=ds.x_train, y=ds.y_train)
    (folder / "train.toml").write_text('data = "data/d.npz"\nepochs = 1\n')
    exp_file = folder / "exp.toml"
    exp_file.write_text(SMALL.replace('data = "digits"', 'data = "data/d.npz"'))
    monkeypatch.chdir(tmp_path)  # elsewhere: data/d.npz does not exist here
    assert load_train_config(folder / "train.toml").data == str(folder / "data" / "d.npz")
    assert load_experiment(exp_file).data == str(folder / "data" / "d.npz")
    assert load_experiment(exp_file, data="digits").data == "digits"  # --data stays relative to here
    exp_file.write_text(SMALL.replace('data = "digits"\n', '').replace("[defaults]", '[defaults]\ndata = "data/d.npz"'))
    assert load_experiment(exp_file).data == str(folder / "data" / "d.npz")  # data in [defaults] is not ignored
