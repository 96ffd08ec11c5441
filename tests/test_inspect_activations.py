"""Activations: inference mode, batching, streaming to disk, layer validation, npz packing."""

import numpy as np
import pytest
import torch

from mlplab.errors import MlplabError
from mlplab.atomic import write_npz
from mlplab.inspect import activations, resolve_layers
from mlplab.model import build

SPEC = "16:relu,dropout:0.5,8:tanh,dropout:0.5,3:softmax"


@pytest.fixture(scope="module")
def model_and_x():
    model = build(SPEC, 12, seed=0)
    x = np.random.default_rng(0).normal(size=(103, 12)).astype(np.float32)
    return model, x


def manual(model, x):
    """Reference forward pass from the Keras-order weights, dropout off."""
    w1, b1, w2, b2, w3, b3 = model.get_weights()
    h1 = np.maximum(x @ w1 + b1, 0)
    h2 = np.tanh(h1 @ w2 + b2)
    z = h2 @ w3 + b3
    p = np.exp(z - z.max(1, keepdims=True))
    return {"dense_1": h1, "dense_2": h2, "dense_3": p / p.sum(1, keepdims=True)}


def test_all_means_every_dense_layer_and_matches_a_manual_forward(model_and_x):
    model, x = model_and_x
    model.train()  # even in training mode the extraction must not apply dropout
    acts = activations(model, x)
    assert list(acts) == ["dense_1", "dense_2", "dense_3"]
    ref = manual(model, x)
    for name, a in acts.items():
        assert a.dtype == np.float32 and a.shape == ref[name].shape
        assert np.allclose(a, ref[name], atol=1e-5)
    assert model.training  # the caller's mode is restored


def test_batches_do_not_change_the_result(model_and_x):
    model, x = model_and_x
    whole = activations(model, x, "dense_2", batch_size=4096)
    pieces = activations(model, x, ["dense_2"], batch_size=10)
    # BLAS may block a 10-row product differently from a 103-row one: equal up to float32 rounding.
    assert np.allclose(whole["dense_2"], pieces["dense_2"], rtol=1e-6, atol=1e-6)


def test_dropout_layer_by_name_equals_its_input(model_and_x):
    model, x = model_and_x
    acts = activations(model, x, "dropout_1,dense_1")
    assert list(acts) == ["dense_1", "dropout_1"]  # model order
    assert np.array_equal(acts["dense_1"], acts["dropout_1"])


def test_streaming_to_a_folder_gives_memmaps(model_and_x, tmp_path):
    model, x = model_and_x
    acts = activations(model, x, "all", batch_size=16, out=tmp_path / "acts")
    assert sorted(p.name for p in (tmp_path / "acts").iterdir()) == ["dense_1.npy", "dense_2.npy", "dense_3.npy"]
    assert isinstance(acts["dense_1"], np.memmap)
    ref = activations(model, x)
    for name in ref:
        assert np.array_equal(np.asarray(acts[name]), ref[name])


def test_unknown_layer_lists_the_valid_names(model_and_x):
    model, x = model_and_x
    with pytest.raises(MlplabError, match="unknown layer 'dense_9'; choose from: all, dense_1, dropout_1, dense_2, "
                                          "dropout_2, dense_3"):
        activations(model, x, "dense_9")
    with pytest.raises(MlplabError, match="no layer given"):
        resolve_layers(model, [])


def test_wrong_input_width(model_and_x):
    model, x = model_and_x
    with pytest.raises(MlplabError, match="inputs have 5 features but the model expects 12"):
        activations(model, x[:, :5])


def test_images_are_flattened_and_tensors_accepted(model_and_x):
    model, x = model_and_x
    a = activations(model, x.reshape(-1, 3, 4), "dense_1")["dense_1"]
    b = activations(model, torch.from_numpy(x), "dense_1")["dense_1"]
    assert np.array_equal(a, b)


def test_write_npz_round_trips_without_pickle(tmp_path, model_and_x):
    model, x = model_and_x
    acts = activations(model, x, out=tmp_path / "m")
    path = write_npz(tmp_path / "a.npz", {**acts, "labels": np.arange(len(x)), "names": np.array(["a", "b"])})
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["dense_1", "dense_2", "dense_3", "labels", "names"]
        assert np.array_equal(z["dense_2"], acts["dense_2"]) and list(z["names"]) == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    with pytest.raises(MlplabError, match="object arrays"):
        write_npz(tmp_path / "b.npz", {"o": np.array([{}], dtype=object)})
