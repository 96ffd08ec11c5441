"""The package surface: every public name resolves, the CLI answers without importing heavy libraries."""

import subprocess
import sys

import mlplab


def test_every_public_name_resolves():
    for name in mlplab.__all__:
        assert getattr(mlplab, name) is not None, name


def test_help_does_not_import_torch_sklearn_or_bokeh():
    code = ("import sys\nfrom mlplab.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'sklearn', 'bokeh', 'matplotlib', 'openTSNE') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "train" in out and "embed" in out and "report" in out


def test_python_m_mlplab_and_unknown_command():
    proc = subprocess.run([sys.executable, "-m", "mlplab", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("mlplab: error: ") and proc.stderr.count("\n") == 1
    assert "datasets, train, evaluate" in proc.stderr


def test_bad_flag_value_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "mlplab", "train", "--epochs", "many"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "many" in proc.stderr


# --- every public function with bad input raises MlplabError (issue 19, item 7) -----------------------------
def _bad_calls():
    import numpy as np

    ds = mlplab.load_dataset("digits")
    m = mlplab.build("8:relu,10:softmax", 64)
    x, y = ds.x_test[:50], ds.y_test[:50]
    nan = np.full((2, 64), np.nan)
    return {
        "load_dataset": [lambda: mlplab.load_dataset(None), lambda: mlplab.load_dataset("digits", test_fraction=3)],
        "Dataset": [lambda: mlplab.Dataset()],
        "train_val_split": [lambda: mlplab.train_val_split(y, 2.0, 0), lambda: mlplab.train_val_split(y, 0.2, -1)],
        "to_features": [lambda: mlplab.to_features("abc"), lambda: mlplab.to_features(np.zeros(3)),
                        lambda: mlplab.to_features(nan), lambda: mlplab.to_features(x[:0])],
        "build": [lambda: mlplab.build("8:relu", -1), lambda: mlplab.build(5, 64),
                  lambda: mlplab.build("8:relu", 64, init="x")],
        "parse_spec": [lambda: mlplab.parse_spec(None), lambda: mlplab.parse_spec("8:nope")],
        "MLP": [lambda: mlplab.MLP("x", 3)],
        "summary": [lambda: mlplab.summary("notamodel")],
        "layer_configs": [lambda: mlplab.layer_configs(None)],
        "fit": [lambda: mlplab.fit(m, x[:0], y[:0]), lambda: mlplab.fit(m, x, y, batch_size=-1),
                lambda: mlplab.fit(m, x, y, lr="a"), lambda: mlplab.fit(m, x, y, epochs=0),
                lambda: mlplab.fit(m, x, np.array(["a"] * 50)), lambda: mlplab.fit(m, x, y + 20),
                lambda: mlplab.fit(m, x, y, validation_data=(x, y + 20)), lambda: mlplab.fit(m, x, y, seed=-1),
                lambda: mlplab.fit(m, x, y, early_stopping="bad"), lambda: mlplab.fit(m, nan, y[:2])],
        "evaluate": [lambda: mlplab.evaluate(m, x, y + 20), lambda: mlplab.evaluate(m, x, y - 20),
                     lambda: mlplab.evaluate(m, x[:0], y[:0]), lambda: mlplab.evaluate(m, x, y, batch_size=0),
                     lambda: mlplab.evaluate(m, x, y, loss="nope"), lambda: mlplab.evaluate(m, x, y[:3])],
        "predict": [lambda: mlplab.predict(m, x[:0]), lambda: mlplab.predict(m, nan), lambda: mlplab.predict(m, "a"),
                    lambda: mlplab.predict(m, None), lambda: mlplab.predict(m, x, batch_size=0),
                    lambda: mlplab.predict("model", x)],
        "History": [lambda: mlplab.History("abc")],
        "EarlyStopping": [lambda: mlplab.EarlyStopping(monitor="nope"), lambda: mlplab.EarlyStopping(patience=-1)],
        "Trainer": [lambda: mlplab.Trainer(m, lr="x"), lambda: mlplab.Trainer("m")],
        "open_run": [lambda: mlplab.open_run(None), lambda: mlplab.open_run("/nonexistent/run")],
        "activations": [lambda: mlplab.activations(m, x, layers="nope"), lambda: mlplab.activations(m, x[:0]),
                        lambda: mlplab.activations(m, "x")],
        "embed": [lambda: mlplab.embed(np.zeros((5, 3)), method="nope"), lambda: mlplab.embed("abc", method="pca"),
                  lambda: mlplab.embed(np.full((10, 3), np.nan), method="pca")],
        "quality": [lambda: mlplab.quality(np.zeros((5, 3)), np.zeros((4, 2)), y[:5]),
                    lambda: mlplab.quality(np.zeros((5, 3)), np.zeros((5, 2)), "abc")],
        "from_keras": [lambda: mlplab.from_keras("/nonexistent/model.keras"), lambda: mlplab.from_keras(None)],
        "TensorBoard": [lambda: mlplab.TensorBoard("tb", histogram_freq=-1),
                        lambda: mlplab.TensorBoard("tb", embeddings_n=0)],
        "MLflowLogger": [lambda: mlplab.MLflowLogger(timeout=-1)],
        "Metrics": [lambda: mlplab.Metrics("abc")],
        "MLPClassifier": [lambda: mlplab.MLPClassifier().fit(np.zeros((4, 3)), np.zeros(4)),
                          lambda: mlplab.MLPClassifier(lr=-1).fit(x, y)],
        "plot_history": [lambda: mlplab.plot_history("curves"), lambda: mlplab.plot_history([])],
        "plot_embedding": [lambda: mlplab.plot_embedding(np.zeros((3, 2)), y)],
        "explore": [lambda: mlplab.explore({}, y), lambda: mlplab.explore(np.zeros((3, 2)), y)],
        "ReduceLROnPlateau": [lambda: mlplab.ReduceLROnPlateau(factor=2), lambda: mlplab.ReduceLROnPlateau(monitor="x")],
        "CSVLogger": [lambda: mlplab.CSVLogger("log.csv", separator=";;")],
        "report": [lambda: mlplab.report("/nonexistent/run"), lambda: mlplab.report(None)],
        "compare": [lambda: mlplab.compare("runs/a", "out"), lambda: mlplab.compare(["/nonexistent/run"], "out")],
        "embed_run": [lambda: mlplab.embed_run("/nonexistent/run"), lambda: mlplab.embed_run(None)],
        "dynamics": [lambda: mlplab.dynamics("/nonexistent/run"), lambda: mlplab.dynamics("/x", method="nope")],
        "Snapshots": [lambda: mlplab.Snapshots(x, ["dense_1"], every=0), lambda: mlplab.Snapshots(x[:0], ["dense_1"])],
        "ModelCheckpoint": [lambda: mlplab.ModelCheckpoint("w.safetensors", monitor="nope"),
                            lambda: mlplab.ModelCheckpoint("w.safetensors", save_freq=5)],
    }


def test_every_public_function_raises_mlplab_error_for_bad_input():
    """Walks mlplab's public API (every name in _EXPORTS that takes input) with bad arguments: each call raises
    MlplabError with one line, never TypeError/ValueError/RuntimeError (evaluate(m, x, y + 20) was a torch
    RuntimeError, predict(m, x[:0]) a ValueError)."""
    import pytest

    from mlplab.errors import MlplabError

    calls = _bad_calls()
    takes_input = set(mlplab._EXPORTS) - {"Callback", "LambdaCallback", "TrainingDiverged", "TerminateOnNaN"}
    assert set(calls) == takes_input
    for name, fns in calls.items():
        for i, fn in enumerate(fns):
            with pytest.raises(MlplabError) as info:
                fn()
            assert "\n" not in info.value.message, (name, i)


def test_the_boundary_keeps_classes_and_valid_calls_intact():
    import numpy as np

    m = mlplab.build("8:relu,10:softmax", 64)
    assert isinstance(m, mlplab.MLP) and issubclass(mlplab.TrainingDiverged, mlplab.MlplabError)
    assert mlplab.predict(m, np.zeros((3, 64), np.float32)).shape == (3, 10)
