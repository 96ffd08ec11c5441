"""The closed-form engine against torch.autograd, on float64, for every activation x loss pairing (with dropout)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlplab.errors import MlplabError
from mlplab.model import ACTIVATIONS, LOSSES, build, engine

pytestmark = pytest.mark.usefixtures("engine_path")  # every test on the compiled kernels and on PyTorch ops

ATOL = 1e-12  # float64: the engine and autograd differ only by summation order
RTOL = 1e-9


def _targets(kind: str, n: int, c: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "int":
        return torch.randint(0, c, (n,), generator=gen)
    if kind == "onehot":
        return torch.eye(c, dtype=torch.float64)[torch.randint(0, c, (n,), generator=gen)]
    return torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64), 1)  # soft targets


def _compare(spec: str, loss: str, target_kind: str, seed: int = 0, n: int = 11, d: int = 6):
    gen = torch.Generator().manual_seed(seed)
    model = build(spec, d, seed=seed).double()
    c = model.n_outputs
    # inputs spread enough that every activation sees both signs and the clip ranges are exercised rarely
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = _targets(target_kind, n, c, gen)
    loss_e, correct_e = engine.train_step(model, x, y, loss, torch.Generator().manual_seed(seed + 100))
    grads_e = [p.grad.clone() for p in model.parameters()]
    loss_r, correct_r = engine.reference_step(model, x, y, loss, torch.Generator().manual_seed(seed + 100))
    grads_r = [p.grad.clone() for p in model.parameters()]
    # the compiled path returns Python floats, the PyTorch path 0-d tensors
    loss_e, loss_r = float(loss_e), float(loss_r)
    assert math.isfinite(loss_e) and math.isfinite(loss_r)
    assert loss_e == pytest.approx(loss_r, rel=RTOL, abs=ATOL)
    assert float(correct_e) == float(correct_r)
    for (name, _), ge, gr in zip(model.named_parameters(), grads_e, grads_r):
        assert torch.isfinite(ge).all(), name
        torch.testing.assert_close(ge, gr, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")
    return grads_e


# Hidden activations x losses, with the output activation each loss is meant for, and dropout in both hidden layers.
NATURAL_OUTPUT = {"categorical_crossentropy": "softmax", "binary_crossentropy": "sigmoid", "mse": "linear"}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_hidden_activation_x_loss_with_dropout(act, loss):
    _compare(f"7:{act},dropout:0.3,5:{act},dropout:0.5,4:{NATURAL_OUTPUT[loss]}", loss, "int")


# Every activation as the output activation with every loss (Keras's probability-space definitions for the
# unfused pairings; binary cross-entropy clips outputs outside [0, 1], which zeroes their gradient, as in Keras).
# Outputs that can be <= 0 make normalised categorical cross-entropy undefined, in Keras too: skip those.
_UNDEFINED_CCE = {"relu", "linear", "tanh", "gelu", "leaky_relu"}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("out", ACTIVATIONS)
def test_output_activation_x_loss(out, loss):
    if loss == "categorical_crossentropy" and out in _UNDEFINED_CCE:
        pytest.skip("categorical cross-entropy needs non-negative outputs with a positive sum")
    _compare(f"6:tanh,dropout:0.2,4:{out}", loss, "soft", seed=3)


@pytest.mark.parametrize("target_kind", ["int", "onehot", "soft"])
@pytest.mark.parametrize("loss", LOSSES)
def test_target_kinds(loss, target_kind):
    _compare(f"8:relu,dropout:0.25,3:{NATURAL_OUTPUT[loss]}", loss, target_kind, seed=5)


def test_int_and_onehot_targets_give_the_same_gradient():
    ga = _compare("8:relu,dropout:0.25,3:softmax", "categorical_crossentropy", "int", seed=7)
    # same seed -> same x and same labels drawn; rebuild the one-hot from the int draw
    gen = torch.Generator().manual_seed(7)
    model = build("8:relu,dropout:0.25,3:softmax", 6, seed=7).double()
    x = torch.randn(11, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (11,), generator=gen)
    engine.train_step(model, x, torch.eye(3, dtype=torch.float64)[y], "categorical_crossentropy",
                      torch.Generator().manual_seed(107))
    for a, p in zip(ga, model.parameters()):
        torch.testing.assert_close(a, p.grad, atol=ATOL, rtol=RTOL)


def test_single_sigmoid_output_binary_labels():
    _compare("5:relu,dropout:0.1,1:sigmoid", "binary_crossentropy", "int", seed=2)  # int labels 0 only (c=1)
    gen = torch.Generator().manual_seed(0)
    model = build("5:relu,1:sigmoid", 3, seed=0).double()
    x = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (20,), generator=gen)
    loss_e, corr_e = engine.train_step(model, x, y, "binary_crossentropy")
    ge = [p.grad.clone() for p in model.parameters()]
    loss_r, corr_r = engine.reference_step(model, x, y, "binary_crossentropy")
    torch.testing.assert_close(loss_e, loss_r)
    assert corr_e == corr_r
    for a, p in zip(ge, model.parameters()):
        torch.testing.assert_close(a, p.grad, atol=ATOL, rtol=RTOL)


def test_notebook_net_float32_matches_autograd():
    gen = torch.Generator().manual_seed(0)
    model = build("512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax", 784, seed=0)
    x = torch.rand(64, 784, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    engine.train_step(model, x, y, "categorical_crossentropy", torch.Generator().manual_seed(1))
    ge = [p.grad.clone() for p in model.parameters()]
    engine.reference_step(model, x, y, "categorical_crossentropy", torch.Generator().manual_seed(1))
    for a, p in zip(ge, model.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-6, rtol=1e-4)


def test_cross_entropy_value_matches_torch():
    gen = torch.Generator().manual_seed(0)
    model = build("6:relu,4:softmax", 5, seed=0).double()
    x = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (10,), generator=gen)
    loss_sum, _ = engine.train_step(model, x, y, "categorical_crossentropy")
    expected = torch.nn.functional.cross_entropy(model.logits(x), y, reduction="sum")
    assert float(loss_sum) == pytest.approx(expected.item(), rel=1e-12)


def test_grad_is_overwritten_and_storage_reused():
    model = build("4:relu,2:softmax", 3, seed=0).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    engine.train_step(model, x, y, "categorical_crossentropy")
    first = [p.grad.clone() for p in model.parameters()]
    ptrs = [p.grad.data_ptr() for p in model.parameters()]
    engine.train_step(model, x, y, "categorical_crossentropy")
    for a, p, ptr in zip(first, model.parameters(), ptrs):
        assert torch.equal(a, p.grad)  # not accumulated
        assert p.grad.data_ptr() == ptr


def test_dropout_masks_follow_the_generator():
    model = build("32:relu,dropout:0.5,3:softmax", 4, seed=0)
    x = torch.randn(16, 4)
    y = torch.randint(0, 3, (16,))
    engine.train_step(model, x, y, "categorical_crossentropy", torch.Generator().manual_seed(9))
    a = [p.grad.clone() for p in model.parameters()]
    engine.train_step(model, x, y, "categorical_crossentropy", torch.Generator().manual_seed(9))
    assert all(torch.equal(u, p.grad) for u, p in zip(a, model.parameters()))
    engine.train_step(model, x, y, "categorical_crossentropy", torch.Generator().manual_seed(10))
    assert not all(torch.equal(u, p.grad) for u, p in zip(a, model.parameters()))


def test_sgd_steps_the_engine_gradients():
    torch.manual_seed(0)
    model = build("16:relu,dropout:0.2,3:softmax", 4, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, foreach=True)
    x = torch.randn(60, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    first = None
    for _ in range(60):
        loss_sum, _ = engine.train_step(model, x, y, "categorical_crossentropy")
        opt.step()
        first = first if first is not None else float(loss_sum)
    assert float(loss_sum) < 0.6 * first


def test_evaluate_and_predict_proba_no_dropout():
    model = build("16:relu,dropout:0.5,3:softmax", 4, seed=0)
    x = torch.randn(50, 4)
    y = torch.randint(0, 3, (50,))
    proba = engine.predict_proba(model, x, batch_size=7)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(proba, expected)
    torch.testing.assert_close(proba.sum(1), torch.ones(50))
    mean_loss, acc = engine.evaluate(model, x.numpy(), y.numpy(), "categorical_crossentropy", batch_size=9)
    ref = torch.nn.functional.cross_entropy(model.logits(x), y).item()
    assert mean_loss == pytest.approx(ref, rel=1e-5)
    assert acc == pytest.approx((expected.argmax(1) == y).float().mean().item())
    assert engine.predict_proba(model, x[:0]).shape == (0, 3)


def test_bad_inputs_raise_mlplab_error():
    model = build("4:relu,2:softmax", 3, seed=0)
    x, y = torch.randn(5, 3), torch.zeros(5, dtype=torch.long)
    with pytest.raises(MlplabError, match="unknown loss 'hinge'; allowed: categorical_crossentropy"):
        engine.train_step(model, x, y, "hinge")
    with pytest.raises(MlplabError, match=r"inputs of shape \(N, 3\)"):
        engine.train_step(model, torch.randn(5, 4), y, "mse")
    with pytest.raises(MlplabError, match="5 inputs but 4 targets"):
        engine.train_step(model, x, y[:4], "mse")
    with pytest.raises(MlplabError, match=r"float targets must have shape \(N, 2\)"):
        engine.train_step(model, x, torch.zeros(5, 3), "mse")


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.9, 0.99999])
def test_draw_mask_distribution(rate):
    like = torch.empty(200, 1001)  # odd size: the 16-bit uniforms do not fill whole 64-bit words
    mask = engine.draw_mask(like, rate, torch.Generator().manual_seed(0))
    keep = engine.keep_probability(rate)
    assert abs(keep - (1 - rate)) <= 1 / 65536
    scale = torch.tensor(1 / keep, dtype=torch.float32).item()  # the kept value, rounded to float32
    values = set(mask.unique().tolist())
    assert values <= {0.0, scale} and scale in values
    assert abs((mask > 0).double().mean().item() - keep) < 5 * (keep * (1 - keep) / mask.numel()) ** 0.5 + 1e-4
    assert abs(mask.double().mean().item() - 1.0) < 0.02 / keep  # inverted scaling keeps the mean at 1


def test_each_path_is_the_one_asked_for(engine_path):
    """The fixture is not vacuous: the compiled softmax kernel returns a float, the PyTorch form a tensor."""
    model = build("8:relu,dropout:0.5,3:softmax", 4, seed=0)
    loss_sum, _ = engine.train_step(model, torch.randn(6, 4), torch.randint(0, 3, (6,)), "categorical_crossentropy")
    assert isinstance(loss_sum, float if engine_path == "compiled" else torch.Tensor)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_dropout_on_the_inputs_matches_autograd(act):
    """A leading dropout layer (Keras allows it) masks the inputs: same masks, same gradients as autograd."""
    grads = _compare(f"dropout:0.4,7:{act},dropout:0.3,4:softmax", "categorical_crossentropy", "int")
    # the first layer's weight gradient sees the masked inputs: some input columns are zero for some rows,
    # so it differs from the same model without the input dropout
    plain = _compare(f"7:{act},dropout:0.3,4:softmax", "categorical_crossentropy", "int")
    assert not torch.allclose(grads[0], plain[0])


def test_input_dropout_is_off_at_inference():
    model = build("dropout:0.5,6:relu,3:softmax", 4, seed=0)
    x = torch.randn(5, 4)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    kept = build("6:relu,3:softmax", 4, seed=0)
    kept.load_state_dict(model.state_dict())  # the same dense layers, names included
    torch.testing.assert_close(model(x), kept.eval()(x))
