"""The whole training step in one compiled call against the same step run from Python (engine.train_step with
FusedSGD, op by op, itself tested against torch.autograd and torch.optim.SGD): float64, every SGD setting, relu
and linear hidden layers with and without dropout, several steps with changing lr and batch sizes."""

from __future__ import annotations

import pytest
import torch
from engine_support import SGD_SETTINGS as SETTINGS
from engine_support import loaded_kernels, settings_id

from mlplab.errors import MlplabError
from mlplab.model import build, compiled_step, engine, kernels
from mlplab.model.fused_sgd import FusedSGD

SPECS = [
    "9:relu,dropout:0.3,7:relu,dropout:0.2,4:softmax",
    "9:linear,dropout:0.4,7:relu,4:softmax",
    "8:relu,6:linear,dropout:0.5,3:softmax",
    "5:relu,4:softmax",
    "4:softmax",  # no hidden layer
]


@pytest.fixture
def k():
    loaded = loaded_kernels()[torch.float64]
    if loaded.gemm is None:
        if torch.backends.mkl.is_available():
            pytest.fail(f"the compiled step should be available here: {kernels.status()}")
        pytest.skip("no exported BLAS gemm in this PyTorch")
    return loaded


def _run(spec, settings, steps, dtype, compiled: bool):
    """Train `steps` batches; returns (losses, corrects, parameters, momentum buffers)."""
    with engine.use_route("c-step" if compiled else "c-kernels"):
        model = build(spec, 6, seed=3).to(dtype)
        opt = torch.optim.SGD(model.parameters(), lr=0.3, **settings)
        fused = FusedSGD(opt)
        data, gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(7)
        losses, corrects = [], []
        for step, n in enumerate(steps):
            x = torch.randn(n, 6, generator=data, dtype=dtype)
            y = torch.randint(0, model.n_outputs, (n,), generator=data)
            opt.param_groups[0]["lr"] = 0.3 / (step + 1)  # a schedule: read every step
            loss_sum, n_correct = engine.train_step(model, x, y, "categorical_crossentropy", gen, sgd=fused)
            losses.append(float(loss_sum))
            corrects.append(float(n_correct))
        params = [p.detach().clone() for p in model.parameters()]
        bufs = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()] if settings["momentum"] else []
        return losses, corrects, params, bufs


@pytest.mark.parametrize("settings", SETTINGS, ids=settings_id)
@pytest.mark.parametrize("spec", SPECS)
def test_compiled_step_matches_the_python_path(k, spec, settings):
    steps = [13, 13, 5, 40, 1]  # a short last batch, a larger one (the work buffers grow), a single sample
    got = _run(spec, settings, steps, torch.float64, compiled=True)
    ref = _run(spec, settings, steps, torch.float64, compiled=False)
    assert got[0] == pytest.approx(ref[0], rel=1e-11, abs=1e-12)
    assert got[1] == ref[1]
    for a, b in zip(got[2] + got[3], ref[2] + ref[3]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("settings", [SETTINGS[3], SETTINGS[5]], ids=["momentum-wd", "nesterov-wd"])
def test_notebook_net_float32_matches(k, settings):
    spec = "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"

    def run(compiled):
        with engine.use_route("c-step" if compiled else "c-kernels"):
            model = build(spec, 784, seed=0)
            fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.05, **settings))
            data, gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
            out = []
            for _ in range(4):
                x, y = torch.rand(128, 784, generator=data), torch.randint(0, 10, (128,), generator=data)
                out.append(engine.train_step(model, x, y, "categorical_crossentropy", gen, sgd=fused))
            return out, [p.detach().clone() for p in model.parameters()]

    (got, gp), (ref, rp) = run(True), run(False)
    for (lg, cg), (lr_, cr) in zip(got, ref):
        assert lg == pytest.approx(float(lr_), rel=1e-5)
        assert abs(cg - float(cr)) <= 1  # an argmax tie may flip with float32 rounding
    for a, b in zip(gp, rp):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_compiled_step_is_what_runs(k, monkeypatch):
    """Not vacuous: for an eligible net the op-by-op loss is never computed."""
    def fail(*a, **kw):
        raise AssertionError("the Python path ran")

    monkeypatch.setattr(engine, "_training_loss", fail)
    model = build("8:relu,dropout:0.2,3:softmax", 4, seed=0)
    fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    assert engine.choose_route(model, "cpu", torch.float32, fused).name == "c-step"
    loss_sum, n_correct = engine.train_step(model, torch.randn(10, 4), torch.randint(0, 3, (10,)),
                                            "categorical_crossentropy", sgd=fused)
    assert isinstance(loss_sum, float) and 0 <= n_correct <= 10


@pytest.mark.parametrize("spec, loss", [
    ("8:tanh,3:softmax", "categorical_crossentropy"),    # another activation
    ("8:relu,3:sigmoid", "categorical_crossentropy"),    # another output
    ("8:relu,1:softmax", "categorical_crossentropy"),    # one output unit
])
def test_other_nets_use_the_python_path(k, spec, loss):
    model = build(spec, 4, seed=0)
    fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    assert compiled_step.for_model(model, fused, k, torch.float32) is None
    assert engine.choose_route(model, "cpu", torch.float32, fused, loss).name == "c-kernels"


def test_non_contiguous_batches_and_float_targets_fall_back(k, monkeypatch):
    model = build("8:relu,3:softmax", 4, seed=0)
    fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(4, 10).t()  # (10, 4), not contiguous
    y = torch.randint(0, 3, (10,))
    step = compiled_step.for_model(model, fused, k, x.dtype)
    assert step is not None and step(x, y, None, fused) is None
    assert step(x.contiguous(), torch.eye(3)[y], None, fused) is None  # one-hot targets
    loss_sum, _ = engine.train_step(model, x, y, "categorical_crossentropy", sgd=fused)  # still trains
    assert torch.isfinite(torch.as_tensor(loss_sum))


def test_a_bad_label_changes_nothing(k):
    model = build("8:relu,dropout:0.5,3:softmax", 4, seed=0)
    fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(MlplabError, match=r"label 7 is outside 0\.\.2 \(the model has 3 outputs\)"):
        engine.train_step(model, torch.randn(5, 4), torch.tensor([0, 1, 7, 2, 0]), "categorical_crossentropy",
                          sgd=fused)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert not any(fused.optimizer.state[p] for p in model.parameters())  # no half-made momentum buffers


# --- what the compiled step must refuse or survive (found in review) ----------------------------------------------
def test_foreign_momentum_buffers_after_double_go_to_the_python_path(k):
    model = build("8:relu,3:softmax", 4, seed=0)
    fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    y = torch.randint(0, 3, (6,))
    engine.train_step(model, torch.randn(6, 4), y, "categorical_crossentropy", sgd=fused)  # float32 buffers
    model.double()  # the same Parameter objects, now float64; the optimizer still holds float32 buffers
    x64 = torch.randn(6, 4, dtype=torch.float64)
    step = compiled_step.for_model(model, fused, k, x64.dtype)
    assert step is not None
    assert step(x64, y, None, fused) is None  # never handed to C as float64 memory


def test_labels_off_the_cpu_go_to_the_python_path(k):
    model = build("8:relu,3:softmax", 4, seed=0)
    fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(6, 4)
    step = compiled_step.for_model(model, fused, k, x.dtype)
    assert step(x, torch.zeros(6, dtype=torch.int64, device="meta"), None, fused) is None


def test_an_interrupted_first_momentum_step_leaves_no_buffers(k, monkeypatch):
    model = build("8:relu,dropout:0.5,3:softmax", 4, seed=0)
    fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    from mlplab.model import masks

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(masks, "draw_keys", interrupted)
        with pytest.raises(KeyboardInterrupt):
            engine.train_step(model, torch.randn(6, 4), torch.randint(0, 3, (6,)), "categorical_crossentropy",
                              sgd=fused)
    assert not any(fused.optimizer.state[p] for p in model.parameters())


@pytest.mark.parametrize("compiled", [True, False])
def test_an_empty_batch_is_refused_on_both_paths(k, compiled):
    model = build("8:relu,3:softmax", 4, seed=0)
    fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    with engine.use_route("c-step" if compiled else "c-kernels"), pytest.raises(MlplabError, match="empty batch"):
        engine.train_step(model, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), "categorical_crossentropy",
                          sgd=fused)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_the_compiled_step_tells_autograd_about_its_writes(k):
    model = build("8:relu,3:softmax", 4, seed=0)
    fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.1))
    versions = [p._version for p in model.parameters()]
    engine.train_step(model, torch.randn(6, 4), torch.randint(0, 3, (6,)), "categorical_crossentropy", sgd=fused)
    assert all(p._version > v for p, v in zip(model.parameters(), versions))
