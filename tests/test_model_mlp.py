"""build() and the MLP module: names, init, Keras-order weights, layer outputs, dropout only in training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlplab.errors import MlplabError
from mlplab.model import MLP, build

NOTEBOOK = "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"


def test_build_notebook_model():
    model = build(NOTEBOOK, 784, seed=0)
    assert isinstance(model, MLP) and isinstance(model, torch.nn.Module)
    assert model.layer_names == ["dense_1", "dropout_1", "dense_2", "dropout_2", "dense_3"]
    assert model.spec == NOTEBOOK and model.input_dim == 784
    assert model.output_activation == "softmax" and model.n_outputs == 10
    assert list(model.state_dict()) == ["dense_1.weight", "dense_1.bias", "dense_2.weight", "dense_2.bias",
                                        "dense_3.weight", "dense_3.bias"]


def test_glorot_uniform_default_and_zero_biases():
    w = build(NOTEBOOK, 784, seed=0).get_weights()
    limit = math.sqrt(6 / (784 + 512))
    assert w[0].shape == (784, 512) and np.abs(w[0]).max() <= limit
    assert np.abs(w[0]).max() > 0.99 * limit            # uniform: reaches the edge
    assert abs(w[0].std() - limit / math.sqrt(3)) < 0.01 * limit
    assert all(not b.any() for b in w[1::2])


@pytest.mark.parametrize("init, std", [("he_normal", math.sqrt(2 / 784)), ("glorot_normal", math.sqrt(2 / 1296)),
                                       ("he_uniform", math.sqrt(6 / 784) / math.sqrt(3))])
def test_other_initialisers_have_the_keras_variance(init, std):
    w = build("512:relu,1:linear", 784, init=init, seed=1).get_weights()[0]
    assert abs(w.std() - std) < 0.03 * std
    if init.endswith("normal"):
        assert np.abs(w).max() <= 2 * std / 0.87962566103423978 + 1e-7  # truncated at 2 (pre-scaling) std


def test_seed_reproducible_and_independent_of_global_rng():
    a = build(NOTEBOOK, 784, seed=3).get_weights()
    torch.manual_seed(123)
    torch.rand(10)
    b = build(NOTEBOOK, 784, seed=3).get_weights()
    c = build(NOTEBOOK, 784, seed=4).get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_build_errors():
    with pytest.raises(MlplabError, match="unknown initializer 'xavier'; allowed: glorot_uniform, he_uniform"):
        build("4:relu,2:softmax", 3, init="xavier")
    with pytest.raises(MlplabError, match="input size must be a whole number >= 1, got 0"):
        build("4:relu,2:softmax", 0)
    with pytest.raises(MlplabError, match="unknown activation 'relux'"):
        build("4:relux,2:softmax", 3)


def test_weights_round_trip_bit_for_bit():
    src = build(NOTEBOOK, 784, seed=0)
    weights = src.get_weights()
    assert [w.shape for w in weights] == [(784, 512), (512,), (512, 512), (512,), (512, 10), (10,)]
    assert all(w.dtype == np.float32 for w in weights)
    dst = build(NOTEBOOK, 784, seed=1)
    dst.set_weights(weights)
    assert all(np.array_equal(u, v) for u, v in zip(weights, dst.get_weights()))
    for (_, p), (_, q) in zip(src.named_parameters(), dst.named_parameters()):
        assert torch.equal(p, q)
    # Keras layout: W is (in, out), so x @ W + b is the layer
    x = torch.rand(3, 784)
    np.testing.assert_allclose((x.numpy() @ weights[0] + weights[1]),
                               src.dense_1(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_set_weights_validates_before_changing_anything():
    model = build("4:relu,2:softmax", 3, seed=0)
    before = model.get_weights()
    bad = [w.copy() for w in before]
    bad[2] = np.zeros((2, 4), np.float32)   # transposed torch layout is refused
    with pytest.raises(MlplabError, match=r"set_weights: dense_2 W must have shape \(4, 2\), got \(2, 4\)"):
        model.set_weights(bad)
    with pytest.raises(MlplabError, match="set_weights needs 4 arrays"):
        model.set_weights(before[:3])
    assert all(np.array_equal(u, v) for u, v in zip(before, model.get_weights()))


def test_forward_logits_and_layer_outputs_match_manual_computation():
    model = build("6:tanh,dropout:0.5,5:relu,dropout:0.3,3:softmax", 4, seed=0).double()
    w = [torch.from_numpy(a) for a in model.get_weights()]
    x = torch.randn(7, 4, dtype=torch.float64)
    h1 = torch.tanh(x @ w[0] + w[1])
    h2 = torch.relu(h1 @ w[2] + w[3])
    z = h2 @ w[4] + w[5]
    outs = model.layer_outputs(x, ["dense_1", "dropout_1", "dense_2", "dropout_2", "dense_3"])
    assert list(outs) == ["dense_1", "dropout_1", "dense_2", "dropout_2", "dense_3"]
    torch.testing.assert_close(outs["dense_1"], h1)
    torch.testing.assert_close(outs["dropout_1"], h1)  # dropout off at inference
    torch.testing.assert_close(outs["dense_2"], h2)
    torch.testing.assert_close(outs["dense_3"], torch.softmax(z, 1))
    model.eval()
    torch.testing.assert_close(model.logits(x), z)
    torch.testing.assert_close(model(x), torch.softmax(z, 1))
    assert outs["dense_1"].requires_grad is False


def test_layer_outputs_inference_mode_even_when_training():
    model = build("64:relu,dropout:0.5,2:softmax", 3, seed=0)
    model.train()
    x = torch.randn(20, 3)
    a = model.layer_outputs(x, "dropout_1")["dropout_1"]
    b = model.layer_outputs(x.numpy(), ["dropout_1"])["dropout_1"]
    assert torch.equal(a, b) and torch.equal(a, model.layer_outputs(x, "dense_1")["dense_1"])
    assert model.training  # mode restored
    with pytest.raises(MlplabError, match="unknown layer 'dense_9'; allowed: dense_1, dropout_1, dense_2"):
        model.layer_outputs(x, ["dense_9"])
    with pytest.raises(MlplabError, match=r"inputs of shape \(N, 3\)"):
        model.layer_outputs(torch.randn(2, 5), "dense_1")


def test_dropout_only_in_training_mode_forward():
    model = build("256:linear,dropout:0.5,256:linear", 8, seed=0)
    x = torch.randn(4, 8)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))
