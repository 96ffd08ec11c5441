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
    meta = json.loads((out / "b" / "embeddings" / "dense_1+dense_2-pca.json").read_text())
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
    # running again without --overwrite refuses and leaves the runs alone
    before = (out / "a" / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(write(tmp_path, SMALL)), "--out", str(out), "-q"])
    assert exit_.value.code == 2 and "already exists" in capsys.readouterr().err
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
