"""`mlplab import` / `mlplab.from_keras` and `mlplab export`, against real Keras 3 (torch backend), h5py and
onnxruntime: predictions equal within 1e-5, round trips bit-equal, hostile files refused in one line."""

import json
import os
import subprocess
import sys
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import mlplab  # noqa: E402
from mlplab.cli import main  # noqa: E402
from mlplab.data import load_dataset, to_features  # noqa: E402
from mlplab.errors import MlplabError  # noqa: E402
from mlplab.model import build, summary  # noqa: E402
from mlplab.runs.folder import open_run  # noqa: E402
from mlplab.runs.export import ONNX_OPSET, export_model  # noqa: E402
from mlplab.runs.keras_import import read_keras  # noqa: E402

L = keras.layers


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def keras_predict(model, x):
    return np.asarray(model.predict(x, verbose=0, batch_size=512))


def mlplab_predict(model, x):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32))).numpy()


def trained_keras(layers, x, y, epochs=1, n=256):
    """Briefly trained (a few SGD steps on n samples): weights that are no longer their initial values."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(layers) if isinstance(layers, list) else layers
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.fit(x[:n], y[:n], epochs=epochs, batch_size=64, verbose=0)
    return model


def save_both(model, folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"{name}.keras", folder / f"{name}.h5"
    for p in paths:
        model.save(p)
    return paths


# --- data ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return to_features(ds.x_train), ds.y_train, to_features(ds.x_test), ds.y_test


@pytest.fixture(scope="module")
def mnist_like(tmp_path_factory):
    """A learnable 28x28 uint8 .npz with 10 classes (MNIST's shape without the download)."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(y):
            x[i, 2 + 2 * label: 4 + 2 * label, 4:24] += 180  # a bright band whose height says the class
        return x.clip(0, 255).astype(np.uint8), y.astype(np.int64)

    path = tmp_path_factory.mktemp("data") / "bands.npz"
    (xtr, ytr), (xte, yte) = make(600), make(200)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


@pytest.fixture(scope="module")
def seed_keras(mnist_like, tmp_path_factory):
    """The notebook's net in Keras: 28x28 -> Flatten -> 512 relu -> .2 -> 512 relu -> .2 -> 10 softmax."""
    with np.load(mnist_like) as z:
        x, y = z["x_train"].astype("float32") / 255, z["y_train"]
    model = trained_keras([keras.Input(shape=(28, 28)), L.Flatten(), L.Dense(512, activation="relu"), L.Dropout(0.2),
                           L.Dense(512, activation="relu"), L.Dropout(0.2), L.Dense(10, activation="softmax")],
                          x, y, epochs=3, n=600)
    return model, save_both(model, tmp_path_factory.mktemp("seed"), "seed")


@pytest.fixture(scope="module")
def imported_run(seed_keras, mnist_like, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "imported"
    with pytest.raises(SystemExit) as exit_info:
        main(["import", str(seed_keras[1][0]), "--data", str(mnist_like), "--out", str(out)])
    assert exit_info.value.code == 0
    return out


# --- import: what Keras computes, mlplab computes -------------------------------------------------------------

def test_seed_architecture_imports_with_keras_parameter_count(seed_keras):
    model, paths = seed_keras
    x = np.random.default_rng(1).random((300, 28, 28), dtype=np.float32)
    want = keras_predict(model, x)
    assert model.count_params() == 669_706
    for path in paths:
        km = read_keras(path)
        assert km.spec == "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"
        assert km.input_shape == (28, 28) and km.notes == []
        mlp = mlplab.from_keras(path)
        assert "Total params: 669,706" in summary(mlp)
        assert np.abs(mlplab_predict(mlp, x) - want).max() < 1e-5


VARIANTS = {
    # name: (layers after the input, expected spec, expected number of notes)
    "no_bias": (lambda: [L.Dense(32, activation="relu", use_bias=False), L.Dense(10, activation="softmax")],
                "32:relu,10:softmax", 1),
    "activation_layers": (lambda: [L.Dense(32), L.Activation("tanh"), L.Dropout(0.1), L.Dense(10),
                                   L.Activation("softmax")], "32:tanh,dropout:0.1,10:softmax", 0),
    "softplus_tanh_sigmoid": (lambda: [L.Dense(24, activation="softplus"), L.Dense(16, activation="tanh"),
                                       L.Dense(12, activation="sigmoid"), L.Dense(10, activation="softmax")],
                              "24:softplus,16:tanh,12:sigmoid,10:softmax", 0),
    "named_gelu_leaky_relu": (lambda: [L.Dense(20, activation="gelu", name="hidden_a"),
                                       L.Dropout(0.3, name="drop"),
                                       L.Dense(20, activation="leaky_relu", name="hidden_b"),
                                       L.Dense(10, activation="softmax", name="probs")],
                              "20:gelu,dropout:0.3,20:leaky_relu,10:softmax", 0),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_predict_like_keras(variant, digits, tmp_path):
    make, spec, n_notes = VARIANTS[variant]
    xtr, ytr, xte, _ = digits
    model = trained_keras([keras.Input(shape=(64,)), *make()], xtr, ytr)
    want = keras_predict(model, xte)
    for path in save_both(model, tmp_path, variant):
        km = read_keras(path)
        assert (km.spec, km.input_dim, len(km.notes)) == (spec, 64, n_notes), km.notes
        assert np.abs(mlplab_predict(mlplab.from_keras(path), xte) - want).max() < 1e-5


def test_functional_chain_with_flatten(digits, tmp_path):
    xtr, ytr, xte, _ = digits
    inp = keras.Input(shape=(8, 8))
    h = L.Dense(16, activation="relu")(L.Flatten()(inp))
    out = L.Dense(10, activation="softmax")(L.Dropout(0.2)(h))
    model = trained_keras(keras.Model(inp, out), xtr.reshape(-1, 8, 8), ytr)
    want = keras_predict(model, xte.reshape(-1, 8, 8))
    for path in save_both(model, tmp_path, "functional"):
        km = read_keras(path)
        assert km.spec == "16:relu,dropout:0.2,10:softmax" and km.input_shape == (8, 8)
        assert np.abs(mlplab_predict(mlplab.from_keras(path), xte) - want).max() < 1e-5


def test_tf_keras_2_legacy_h5_layout(tmp_path):
    """The HDF5 layout tf.keras 2.x writes (no InputLayer: batch_input_shape on the first layer; weight names with
    ':0'; bias listed before kernel here), written with h5py and checked against a numpy forward pass."""
    rng = np.random.default_rng(6)
    w1, b1 = rng.normal(size=(64, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    w2, b2 = rng.normal(size=(8, 10)).astype(np.float32), rng.normal(size=10).astype(np.float32)
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "Dense", "config": {"name": "dense", "batch_input_shape": [None, 64], "units": 8,
                                           "activation": "sigmoid", "use_bias": True}},
        {"class_name": "Dropout", "config": {"name": "dropout", "rate": 0.5}},
        {"class_name": "Dense", "config": {"name": "dense_1", "units": 10, "activation": "softmax", "use_bias": True}}]}}
    path = tmp_path / "tf2.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["training_config"] = json.dumps({"loss": "categorical_crossentropy"})
        mw = f.create_group("model_weights")
        for name, w, b in (("dense", w1, b1), ("dense_1", w2, b2)):
            g = mw.create_group(name)
            g.attrs["weight_names"] = [f"{name}/bias:0".encode(), f"{name}/kernel:0".encode()]
            g[f"{name}/kernel:0"], g[f"{name}/bias:0"] = w, b
    km = read_keras(path)
    assert (km.spec, km.input_shape, km.loss) == ("8:sigmoid,dropout:0.5,10:softmax", (64,), "categorical_crossentropy")
    assert km.source["keras_version"] == "2.15.0"
    x = rng.random((20, 64), dtype=np.float32)
    h = 1 / (1 + np.exp(-(x @ w1 + b1)))
    z = h @ w2 + b2
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    assert np.abs(mlplab_predict(mlplab.from_keras(path), x) - want).max() < 1e-5


def test_dropout_where_the_spec_has_none_is_tidied_with_notes():
    from mlplab.runs.keras_import import parse_model_config

    def layer(cls, **cfg):
        return {"class_name": cls, "config": cfg}

    config = {"class_name": "Sequential", "config": {"layers": [
        layer("InputLayer", name="in", batch_shape=[None, 5]), layer("Dropout", name="d0", rate=0.1),
        layer("Dense", name="a", units=4, activation="relu"), layer("Dropout", name="d1", rate=0.5),
        layer("Dropout", name="d2", rate=0.5), layer("Activation", name="lin", activation="linear"),
        layer("Dense", name="b", units=3, activation="softmax"), layer("Dropout", name="d3", rate=0.2)]}}
    layers, shape, notes, _ = parse_model_config(config, "test")
    assert [(x.kind, x.units or x.rate) for x in layers] == [("dense", 4), ("dropout", 0.75), ("dense", 3)]
    assert shape == (5,) and len(notes) == 4
    text = " | ".join(notes)
    assert all(part in text for part in ("'d0' (Dropout on the input)", "'lin' (Activation linear)",
                                         "merged into one with rate 0.75", "'d3' (Dropout after the output layer)"))


# --- import: the run folder and every verb on it ----------------------------------------------------------------

def test_imported_run_is_a_complete_run(imported_run, seed_keras, mnist_like):
    run = open_run(imported_run)
    assert run.config["model"] == {"spec": "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax", "input_dim": 784,
                                   "init": "glorot_uniform"}
    assert run.config["data"]["name"] == str(mnist_like.resolve())
    assert run.history() == []
    assert (imported_run / "history.csv").read_text() == "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n"
    manifest = run.manifest()
    source = manifest["imported_from"]
    assert source["path"] == str(seed_keras[1][0].resolve()) and source["format"] == "keras"
    assert source["keras_version"] == keras.__version__ and len(source["sha256"]) == 64
    assert source["layers"] == {"dense_1": seed_keras[0].layers[1].name, "dropout_1": seed_keras[0].layers[2].name,
                                "dense_2": seed_keras[0].layers[3].name, "dropout_2": seed_keras[0].layers[4].name,
                                "dense_3": seed_keras[0].layers[5].name}
    assert "Total params: 669,706" in run.summary_text()
    # test metrics are Keras's own accuracy on the same test split
    with np.load(mnist_like) as z:
        keras_acc = float((keras_predict(seed_keras[0], z["x_test"].astype("float32") / 255).argmax(1)
                           == z["y_test"]).mean())
    assert run.metrics()["test_accuracy"] == pytest.approx(keras_acc, abs=1e-12)
    assert manifest["test_accuracy"] == run.metrics()["test_accuracy"] and keras_acc > 0.5


def test_every_verb_works_on_an_imported_run(imported_run, mnist_like, tmp_path, capsys):
    run = str(imported_run)
    code, out, err = run_cli(["evaluate", run, "--quiet"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["summary", run], capsys)
    assert code == 0 and "669,706" in out, err
    code, out, err = run_cli(["activations", run, "--layer", "dense_2", "--n", "50", "--out", tmp_path / "a.npz"],
                             capsys)
    assert code == 0, err
    with np.load(tmp_path / "a.npz") as z:
        assert z["dense_2"].shape == (50, 512)
    code, out, err = run_cli(["embed", run, "--layer", "dense_2", "--method", "pca", "--n", "100"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["report", run], capsys)
    assert code == 0, err
    html = (imported_run / "report.html").read_text()
    assert "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax" in html and "imported" in html
    code, out, err = run_cli(["compare", run, run, "--names", "a,b", "--out", tmp_path / "cmp"], capsys)
    assert code == 0, err
    with np.load(mnist_like) as z:
        np.save(tmp_path / "sample.npy", z["x_test"][0])
        label = int(z["y_test"][0])
    code, out, err = run_cli(["predict", run, tmp_path / "sample.npy", "--top", "1"], capsys)
    assert code == 0, err
    assert f" {label} " in out.splitlines()[3]  # the band model gets this easy sample right


def test_import_refuses_data_that_does_not_fit(seed_keras, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["import", seed_keras[1][1], "--data", "digits", "--out", out], capsys)
    assert code == 2 and "takes 784 inputs" in err and "64 features" in err and err.count("\n") == 1
    assert not out.exists()


# --- export -----------------------------------------------------------------------------------------------------

ALL_ACTS = "16:gelu,dropout:0.1,12:leaky_relu,12:softplus,10:sigmoid,10:tanh,10:linear,10:softmax"


@pytest.fixture(scope="module")
def all_acts_model():
    model = build(ALL_ACTS, 64, seed=3)
    with torch.no_grad():
        for _, lin in model.dense_layers():
            lin.bias.uniform_(-0.5, 0.5)  # non-zero biases, so a bias mix-up cannot pass
    return model.eval()


@pytest.mark.parametrize("spec_model", ["seed", "all_activations"])
def test_onnx_matches_at_batch_1_and_1000(spec_model, imported_run, all_acts_model, tmp_path, capsys):
    if spec_model == "seed":
        model = open_run(imported_run).model()
        code, out, err = run_cli(["export", imported_run, "--format", "onnx", "--out", tmp_path / "m.onnx"], capsys)
        assert code == 0, err
        assert f"opset {ONNX_OPSET}" in out
    else:
        model = all_acts_model
        export_model(model, "onnx", tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.opset_import[0].version == ONNX_OPSET
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out_,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out_.name) == ("input", "output")
    assert inp.shape == ["batch", model.input_dim] and out_.shape == ["batch", model.n_outputs]
    x = np.random.default_rng(2).normal(0.5, 1.0, (1000, model.input_dim)).astype(np.float32)
    want = mlplab_predict(model, x)
    for n in (1, 1000):
        assert np.abs(session.run(None, {"input": x[:n]})[0] - want[:n]).max() < 1e-5


def test_torchscript_loads_in_a_fresh_process(imported_run, all_acts_model, tmp_path, capsys):
    code, _, err = run_cli(["export", imported_run, "--format", "torchscript", "--out", tmp_path / "seed.pt"], capsys)
    assert code == 0, err
    export_model(all_acts_model, "torchscript", tmp_path / "acts.pt")
    rng = np.random.default_rng(4)
    np.save(tmp_path / "seed_x.npy", rng.random((100, 784), dtype=np.float32))
    np.save(tmp_path / "acts_x.npy", rng.normal(0, 2, (100, 64)).astype(np.float32))
    script = ("import sys, numpy as np, torch\n"
              "for name in ('seed', 'acts'):\n"
              "    m = torch.jit.load(sys.argv[1] + f'/{name}.pt')\n"
              "    x = torch.from_numpy(np.load(sys.argv[1] + f'/{name}_x.npy'))\n"
              "    np.save(sys.argv[1] + f'/{name}_y.npy', m(x).detach().numpy())\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # torch only: no mlplab in that process
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env, cwd=tmp_path)
    seed = open_run(imported_run).model()
    for name, model in (("seed", seed), ("acts", all_acts_model)):
        got = np.load(tmp_path / f"{name}_y.npy")
        assert np.abs(got - mlplab_predict(model, np.load(tmp_path / f"{name}_x.npy"))).max() < 1e-5


def test_keras_export_loads_in_keras_and_round_trips(imported_run, mnist_like, all_acts_model, tmp_path, capsys):
    code, out, err = run_cli(["export", imported_run, "--format", "keras", "--out", tmp_path / "seed.keras"], capsys)
    assert code == 0, err
    export_model(all_acts_model, "keras", tmp_path / "acts.keras")
    x = np.random.default_rng(5).random((200, 784), dtype=np.float32)
    original = open_run(imported_run).model()
    for path, model in ((tmp_path / "seed.keras", original), (tmp_path / "acts.keras", all_acts_model)):
        loaded = keras.saving.load_model(path)
        xs = x[:, :model.input_dim]
        assert np.abs(keras_predict(loaded, xs) - mlplab_predict(model, xs)).max() < 1e-5
    # import(export(run)) == run: same spec, bit-equal weights
    again = tmp_path / "again"
    code, _, err = run_cli(["import", tmp_path / "seed.keras", "--data", mnist_like, "--out", again, "-q"], capsys)
    assert code == 0, err
    a, b = open_run(imported_run), open_run(again)
    assert a.config["model"] == b.config["model"] and a.config["data"]["input_dim"] == 784
    sa, sb = a.model().state_dict(), b.model().state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.metrics()["test_accuracy"] == b.metrics()["test_accuracy"]
    acts = read_keras(tmp_path / "acts.keras")
    assert acts.spec == ALL_ACTS
    assert all(np.array_equal(u, v) for u, v in zip(acts.weights, all_acts_model.get_weights()))


def test_export_errors_are_one_line(imported_run, tmp_path, capsys):
    for args, expect in [
        (["--format", "tflite", "--out", tmp_path / "m.tflite"], "choose one of: onnx, torchscript, keras"),
        (["--format", "keras", "--out", tmp_path / "m.h5"], "ends in .keras"),
        (["--format", "onnx", "--out", tmp_path], "is a folder"),
    ]:
        code, _, err = run_cli(["export", imported_run, *args], capsys)
        assert code == 2 and expect in err and err.count("\n") == 1, err
    code, _, err = run_cli(["export", tmp_path / "missing", "--format", "onnx", "--out", tmp_path / "x.onnx"], capsys)
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "m.tflite").exists()


# --- hostile files ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_files(digits, tmp_path_factory):
    xtr, ytr, _, _ = digits
    model = trained_keras([keras.Input(shape=(64,)), L.Dense(16, activation="relu"), L.Dense(10, activation="softmax")],
                          xtr, ytr)
    return save_both(model, tmp_path_factory.mktemp("small"), "small")


def rewrite_keras(src, dst, edit=None, weights=None):
    """Copy a .keras archive, editing its config.json and/or replacing its weights member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "config.json" and edit is not None:
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            if item.filename == "model.weights.h5" and weights is not None:
                data = weights
            zout.writestr(item.filename, data)
    return dst


def dense_entries(config):
    return [e for e in config["config"]["layers"] if e["class_name"] == "Dense"]


def hostile(kind, small_files, tmp):
    keras_file, h5_file = small_files
    if kind == "truncated zip":
        data = keras_file.read_bytes()
        (tmp / "t.keras").write_bytes(data[: len(data) // 2])
        return tmp / "t.keras", "damaged or truncated"
    if kind == "wrong weight shape":
        path = tmp / "w.h5"
        path.write_bytes(h5_file.read_bytes())
        with h5py.File(path, "r+") as f:
            group = f["model_weights"][dense_entries(json.loads(f.attrs["model_config"]))[1]["config"]["name"]]
            kernel = [n for n in group.attrs["weight_names"] if "kernel" in str(n)][0]
            del group[kernel]
            group.create_dataset(kernel, data=np.zeros((17, 10), np.float32))
        return path, "has shape (17, 10), the config says (16, 10)"
    if kind == "lambda layer":
        def edit(config):
            config["config"]["layers"].insert(2, {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
                                                  "config": {"name": "evil", "function": {"class_name": "__lambda__",
                                                                                          "config": {"code": "4wAAAA=="}}}})
        return rewrite_keras(keras_file, tmp / "l.keras", edit), "'evil' (Lambda)"
    if kind == "custom layer":
        def edit(config):
            config["config"]["layers"][1].update(module="my_package.layers", registered_name="MyPackage>MyDense",
                                                 class_name="MyDense")
        return rewrite_keras(keras_file, tmp / "c.keras", edit), "custom object (MyPackage>MyDense)"
    if kind == "not a model":
        (tmp / "n.keras").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
        return tmp / "n.keras", "is not a Keras model file"
    if kind == "zip without config":
        with zipfile.ZipFile(tmp / "z.keras", "w") as zf:
            zf.writestr("readme.txt", "hello")
        return tmp / "z.keras", "without config.json"
    if kind == "hdf5 without model":
        with h5py.File(tmp / "plain.h5", "w") as f:
            f["x"] = np.zeros(3)
        return tmp / "plain.h5", "without a Keras model config"
    if kind == "billion units":
        def edit(config):
            dense_entries(config)[0]["config"]["units"] = 10**9
        # weights that are not even HDF5: the config alone must refuse the file, before any array is read
        return rewrite_keras(keras_file, tmp / "b.keras", edit, weights=b"garbage"), "units=1000000000"
    if kind == "parameter cap":
        def edit(config):
            config["config"]["layers"][0]["config"]["batch_shape"] = [None, 10**6]
            dense_entries(config)[0]["config"]["units"] = 10**6
        return rewrite_keras(keras_file, tmp / "p.keras", edit, weights=b"garbage"), "at most 500,000,000 are allowed"
    if kind == "input shape past 2**63":
        def edit(config):  # 2**32 * 2**32 wraps to 0 in int64 arithmetic: the count must be exact
            config["config"]["layers"][0]["config"]["batch_shape"] = [None, 2**32, 2**32]
            config["config"]["layers"].insert(1, {"module": "keras.layers", "class_name": "Flatten",
                                                  "registered_name": None, "config": {"name": "flat"}})
        return rewrite_keras(keras_file, tmp / "o.keras", edit, weights=b"garbage"), "at most 500,000,000 are allowed"
    if kind == "external link":
        path = tmp / "e.h5"
        path.write_bytes(h5_file.read_bytes())
        with h5py.File(path, "r+") as f:
            name = dense_entries(json.loads(f.attrs["model_config"]))[0]["config"]["name"]
            group = f["model_weights"][name]
            target = [n for n in group.attrs["weight_names"] if "kernel" in str(n)][0]
            del group[target]
            group[target] = h5py.ExternalLink("/etc/hostname", "/x")
        return path, "ExternalLink"
    if kind == "unsupported activation":
        def edit(config):
            dense_entries(config)[0]["config"]["activation"] = "elu"
        return rewrite_keras(keras_file, tmp / "a.keras", edit), "activation 'elu'; supported: relu, softplus"
    if kind == "activation after relu":
        def edit(config):
            config["config"]["layers"].insert(2, {"module": "keras.layers", "class_name": "Activation",
                                                  "registered_name": None,
                                                  "config": {"name": "act", "activation": "tanh"}})
        return rewrite_keras(keras_file, tmp / "r.keras", edit), "must directly follow a Dense layer with the linear"
    if kind == "branching model":
        inp = keras.Input(shape=(64,))
        out = L.Dense(10, activation="softmax")(L.Add()([L.Dense(8)(inp), L.Dense(8)(inp)]))
        keras.Model(inp, out).save(tmp / "branch.keras")
        return tmp / "branch.keras", "(Add) cannot be imported"
    raise AssertionError(kind)


HOSTILE = ["truncated zip", "wrong weight shape", "lambda layer", "custom layer", "not a model", "zip without config",
           "hdf5 without model", "billion units", "parameter cap", "input shape past 2**63", "external link", "unsupported activation",
           "activation after relu", "branching model"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_files_are_refused_in_one_line(kind, small_files, tmp_path, capsys):
    path, expect = hostile(kind, small_files, tmp_path)
    out = tmp_path / "runs" / "r"
    code, stdout, err = run_cli(["import", path, "--data", "digits", "--out", out], capsys)
    assert code == 2, (stdout, err)
    assert err.startswith("mlplab: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert expect in err, err
    assert not (tmp_path / "runs").exists()  # nothing written, not even the parent folder
    with pytest.raises(MlplabError):
        mlplab.from_keras(path)


def test_import_over_an_existing_run_needs_overwrite(small_files, tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = run_cli(["import", small_files[0], "--data", "digits", "--out", out, "-q"], capsys)
    assert code == 0, err
    before = (out / "model.safetensors").read_bytes()
    code, _, err = run_cli(["import", small_files[1], "--data", "digits", "--out", out], capsys)
    assert code == 2 and "--overwrite" in err
    (out / "my-notes.txt").write_text("mine")
    code, _, err = run_cli(["import", small_files[1], "--data", "digits", "--out", out, "--overwrite"], capsys)
    assert code == 2 and "my-notes.txt" in err
    (out / "my-notes.txt").unlink()
    code, _, err = run_cli(["import", small_files[1], "--data", "digits", "--out", out, "--overwrite", "-q"], capsys)
    assert code == 0, err
    assert open_run(out).manifest()["imported_from"]["format"] == "h5"
    assert (out / "model.safetensors").read_bytes() == before  # the same model, saved both ways
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temporary folders left
