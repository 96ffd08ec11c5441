"""mlplab.train(...) from Python writes the run folder `mlplab train` writes; mlplab.open_run reads it back."""

from __future__ import annotations

import json
import re

import pytest

import mlplab
from mlplab.cli import main
from mlplab.errors import MlplabError

SETTINGS = {"model": "32:relu,dropout:0.1,10:softmax", "lr": 0.1, "momentum": 0.9, "epochs": 3,
            "batch_size": 64, "early_stop": "val_loss:5", "seed": 3}
FLAGS = ["--model", SETTINGS["model"], "--lr", "0.1", "--momentum", "0.9", "--epochs", "3", "--batch-size", "64",
         "--early-stop", "val_loss:5", "--seed", "3"]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    py = mlplab.train("digits", root / "py", verbose=0, **SETTINGS)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "digits", *FLAGS, "--out", str(root / "cli"), "--quiet"])
    assert exit_info.value.code == 0
    return py, mlplab.open_run(root / "cli")


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_python_and_cli_write_the_same_run(both):
    py, cli = both
    assert sorted(p.name for p in py.path.iterdir()) == sorted(p.name for p in cli.path.iterdir())
    assert without_seconds(py.history().rows) == without_seconds(cli.history().rows)
    assert len(py.history()) == 3 and py.history().rows[-1]["val_accuracy"] > 0.5
    assert py.metrics() == cli.metrics() and isinstance(py.metrics(), mlplab.Metrics)
    config_py = json.loads((py.path / "config.json").read_text())
    config_cli = json.loads((cli.path / "config.json").read_text())
    assert config_py == config_cli
    assert (py.path / "summary.txt").read_text() == (cli.path / "summary.txt").read_text()
    x = mlplab.load_dataset("digits").x_test[:50]
    assert (mlplab.predict(py.model(), x) == mlplab.predict(cli.model(), x)).all()


def test_a_python_run_resumes_from_the_cli(both, tmp_path):
    import shutil

    py, _ = both
    copy = tmp_path / "copy"
    shutil.copytree(py.path, copy)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(copy), "--epochs", "4", "--quiet"])
    assert exit_info.value.code == 0
    resumed = mlplab.open_run(copy)
    assert len(resumed.history()) == 4
    assert without_seconds(resumed.history().rows[:3]) == without_seconds(py.history().rows)


def test_a_run_shows_itself(both):
    py, _ = both
    page = py._repr_html_()
    assert "test accuracy" in page and f"{py.metrics()['test_accuracy']:.4f}" in page
    assert 'src="data:image/png;base64,' in page and "history.csv" in page
    assert not re.search(r"\bhttps?://", page)
    assert repr(py).endswith(f"3 epochs, test accuracy {py.metrics()['test_accuracy']:.4f})")


def test_hostile_run_name_is_escaped(both, tmp_path):
    import shutil

    py, _ = both
    hostile = tmp_path / '<img src=x onerror="alert(1)">'
    shutil.copytree(py.path, hostile)
    page = mlplab.open_run(hostile)._repr_html_()
    assert "<img src=x" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


@pytest.mark.parametrize("call, message", [
    (lambda tmp: mlplab.train("digits", tmp / "r", epochz=3), "unknown key 'epochz'; allowed: data, model"),
    (lambda tmp: mlplab.train("digits", tmp / "r", epochs=0), "epochs"),
    (lambda tmp: mlplab.train("digits"), "needs out=RUN_DIR"),
    (lambda tmp: mlplab.train("digits", tmp / "r", verbose="loud"), "verbose must be one of"),
    (lambda tmp: mlplab.open_run(tmp), "config.json is missing"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, call, message):
    with pytest.raises(MlplabError, match=re.escape(message)) as info:
        call(tmp_path)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_mlplab_train_is_both_the_subpackage_and_the_function():
    import mlplab.train.trainer  # noqa: F401  (binds the subpackage to mlplab.train, as any import does)

    assert callable(mlplab.train) and mlplab.train.History is mlplab.History


def test_report_compare_and_embed_take_a_run_or_a_path(both, tmp_path):
    py, cli = both
    page = mlplab.report(py)  # a Run
    assert page == py.path / "report.html" and "mlplab run report" in page.read_text(encoding="utf-8")
    html = mlplab.compare([py, str(cli.path)], tmp_path / "cmp", names=["python", "cli"])  # a Run and a path
    text = html.read_text(encoding="utf-8")
    assert html.name == "compare.html" and "python" in text and "cli" in text
    result = mlplab.embed_run(str(cli.path), layer="dense_1", method="pca", n=50, write_html=False)
    assert len(result.maps) == 1 and result.maps[0].embedding.coords.shape == (50, 2)
    assert (cli.path / "embeddings" / "dense_1-pca-n50.npz").exists()
