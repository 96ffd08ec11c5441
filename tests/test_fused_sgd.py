"""The SGD update fused into the backward pass against the reference path: engine gradients in .grad, then
torch.optim.SGD.step(); float64, every SGD setting, several steps (so momentum buffers start and carry on),
with dropout masks from the same generator draws."""

from __future__ import annotations

import pytest
import torch
from engine_support import SGD_SETTINGS as SETTINGS
from engine_support import settings_id

from mlplab.errors import MlplabError
from mlplab.model import build, engine
from mlplab.model.fused_sgd import FusedSGD

pytestmark = pytest.mark.usefixtures("engine_path")  # every test on the compiled kernels and on PyTorch ops

SPEC = "9:relu,dropout:0.3,7:tanh,dropout:0.2,4:softmax"


def _pair(settings, lr=0.3):
    model_f = build(SPEC, 6, seed=3).double()
    model_r = build(SPEC, 6, seed=3).double()
    opt_f = torch.optim.SGD(model_f.parameters(), lr=lr, **settings)
    opt_r = torch.optim.SGD(model_r.parameters(), lr=lr, **settings)
    return model_f, opt_f, model_r, opt_r


@pytest.mark.parametrize("settings", SETTINGS, ids=settings_id)
def test_fused_update_matches_torch_sgd_step(settings):
    model_f, opt_f, model_r, opt_r = _pair(settings)
    fused = FusedSGD(opt_f)
    data = torch.Generator().manual_seed(0)
    gen_f, gen_r = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for step in range(5):
        x = torch.randn(13, 6, generator=data, dtype=torch.float64)
        y = torch.randint(0, 4, (13,), generator=data)
        for group in (opt_f.param_groups[0], opt_r.param_groups[0]):
            group["lr"] = 0.3 / (step + 1)  # a schedule: the fused path must read lr every step
        loss_f, correct_f = engine.train_step(model_f, x, y, "categorical_crossentropy", gen_f, sgd=fused)
        loss_r, correct_r = engine.train_step(model_r, x, y, "categorical_crossentropy", gen_r)
        opt_r.step()
        assert float(loss_f) == pytest.approx(float(loss_r), rel=1e-10, abs=1e-12)
        assert correct_f == correct_r
        for (name, pf), pr in zip(model_f.named_parameters(), model_r.parameters()):
            assert pf.grad is None, f"{name}: the fused path must not write .grad"
            torch.testing.assert_close(pf, pr, atol=1e-12, rtol=1e-10, msg=lambda m: f"step {step} {name}: {m}")
            if settings["momentum"]:
                torch.testing.assert_close(opt_f.state[pf]["momentum_buffer"], opt_r.state[pr]["momentum_buffer"],
                                           atol=1e-12, rtol=1e-10)
    # the state_dicts have the same structure, so a checkpoint written from either loads into the other
    assert opt_f.state_dict()["param_groups"] == opt_r.state_dict()["param_groups"]
    assert set(opt_f.state_dict()["state"]) == set(opt_r.state_dict()["state"])


def test_parameters_actually_move_and_loss_falls():
    model, opt, _, _ = _pair(dict(momentum=0.9, nesterov=True, weight_decay=0.0), lr=0.1)
    fused = FusedSGD(opt)
    before = [p.detach().clone() for p in model.parameters()]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=gen, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # a learnable rule
    losses = [float(engine.train_step(model, x, y, "categorical_crossentropy", gen, sgd=fused)[0]) / 64
              for _ in range(60)]
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert losses[-1] < 0.5 * losses[0]


def test_torch_sgd_can_take_over_from_fused_state():
    """Fused steps, then torch's own SGD.step from the same state, equals torch's SGD all along."""
    settings = dict(momentum=0.9, nesterov=False, weight_decay=1e-3)
    model_f, opt_f, model_r, opt_r = _pair(settings)
    fused = FusedSGD(opt_f)
    data = torch.Generator().manual_seed(5)
    batches = [(torch.randn(8, 6, generator=data, dtype=torch.float64), torch.randint(0, 4, (8,), generator=data))
               for _ in range(4)]
    gen_f, gen_r = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)  # the same dropout masks
    for i, (x, y) in enumerate(batches):
        if i < 2:
            engine.train_step(model_f, x, y, "categorical_crossentropy", gen_f, sgd=fused)
        else:
            engine.train_step(model_f, x, y, "categorical_crossentropy", gen_f)
            opt_f.step()
        engine.train_step(model_r, x, y, "categorical_crossentropy", gen_r)
        opt_r.step()
    for pf, pr in zip(model_f.parameters(), model_r.parameters()):
        torch.testing.assert_close(pf, pr, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.Adam(ps, lr=0.1),
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5),
    lambda ps: torch.optim.SGD(ps, lr=0.1, maximize=True),
])
def test_unsupported_optimizers_are_refused(make):
    model = build("3:softmax", 2, seed=0)
    with pytest.raises(MlplabError):
        FusedSGD(make(model.parameters()))
