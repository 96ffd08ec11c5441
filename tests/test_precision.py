"""bf16 mixed precision (model/precision.py and the bf16 whole step): names and aliases, the refusal on a CPU
without bf16 instructions, gradients against a float64 autograd reference, the float32 master update against
torch.optim.SGD on the same bf16 gradients, bit-identical resume within bf16, old runs loading as fp32, and (slow)
the Fashion-MNIST recipe's accuracy in bf16 against fp32."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from engine_support import SGD_SETTINGS, loaded_kernels, settings_id

from mlplab.runs.config import TrainOptions, load_train_config
from mlplab.errors import MlplabError
from mlplab.model import build, engine, masks, precision
from mlplab.model.fused_sgd import FusedSGD

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.fixture
def bf16_kernels():
    k = loaded_kernels()[torch.float32]
    if k.train_step_bf16 is None:
        pytest.skip("no bf16 gemm: neither AVX512-BF16 for mlplab's nor cblas_gemm_bf16bf16f32 in this PyTorch")
    if not precision.cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions")
    return k


@pytest.fixture
def no_cpu_bf16():
    previous = precision.set_cpu_bf16(False)  # the public override: a CPU without bf16 instructions
    yield
    precision.set_cpu_bf16(previous)


# --- names -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, canonical", [("fp32", "fp32"), ("bf16", "bf16"), ("mixed_bfloat16", "bf16"),
                                             ("float32", "fp32"), (" BF16 ", "bf16")])
def test_names_and_keras_aliases(name, canonical):
    assert precision.normalize(name) == canonical


@pytest.mark.parametrize("bad", ["fp16", "", None, 16])
def test_unknown_precision_lists_the_allowed_values(bad):
    with pytest.raises(MlplabError, match=r"unknown precision .*; allowed: fp32, bf16, tf32, auto \(or Keras's mixed_bfloat16"):
        precision.normalize(bad)


def test_options_take_precision_and_old_runs_load_as_fp32():
    assert TrainOptions.from_mapping({}).precision == "fp32"  # config.json written before precision existed
    assert TrainOptions.from_mapping({"precision": "mixed_bfloat16"}).precision == "bf16"
    with pytest.raises(MlplabError, match="options: unknown precision 'half'"):
        TrainOptions.from_mapping({"precision": "half"})


def test_auto_is_bf16_where_the_cpu_has_it_and_fp32_elsewhere(tmp_path):
    import json

    from mlplab.cli import main

    previous = precision.set_cpu_bf16(False)
    try:
        assert precision.check("auto", "cpu") == "fp32"
        precision.set_cpu_bf16(True)
        assert precision.check("auto", "cpu") == "bf16"
    finally:
        precision.set_cpu_bf16(previous)
    # a run records what auto became on this machine; config.json keeps the recipe's "auto"
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "digits", "--model", "16:relu,10:softmax", "--epochs", "1", "--precision", "auto",
              "--out", str(tmp_path / "run"), "-q"])
    assert info.value.code in (0, None)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["environment"]["precision"] == ("bf16" if precision.cpu_has_bf16() else "fp32")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["precision"] == "auto"


# --- tf32: a CUDA option ---------------------------------------------------------------------------------------
def test_tf32_on_the_cpu_is_one_line_with_exit_2_and_no_run_folder(tmp_path, capsys):
    from mlplab.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "digits", "--epochs", "1", "--precision", "tf32", "--out", str(tmp_path / "run"),
              "-q"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        "mlplab: error: --precision tf32 is TensorFloat-32 on CUDA GPUs; on cpu use fp32 or bf16"]
    assert not (tmp_path / "run").exists()


def test_tf32_switch_is_on_only_inside_fit_and_restored():
    before = torch.backends.cuda.matmul.allow_tf32
    with precision.products_for("tf32"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before
    with precision.products_for("fp32"):
        assert torch.backends.cuda.matmul.allow_tf32 == before
    assert precision.engine_precision("tf32") == "fp32" and precision.engine_precision("bf16") == "bf16"


# --- refusal without bf16 instructions ----------------------------------------------------------------------------
def test_bf16_is_refused_without_bf16_instructions(no_cpu_bf16):
    from mlplab.train.trainer import Trainer

    refusal = r"--precision bf16 needs a CPU with bf16 instructions .* use --precision fp32"
    with pytest.raises(MlplabError, match=refusal):
        Trainer(build("4:relu,3:softmax", 2, seed=0), precision="bf16")
    Trainer(build("4:relu,3:softmax", 2, seed=0), precision="fp32")  # fp32 is unaffected


def test_cli_refuses_bf16_in_one_line_with_exit_2(no_cpu_bf16, tmp_path, capsys):
    from mlplab.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "digits", "--epochs", "1", "--precision", "bf16", "--out", str(tmp_path / "run"),
              "-q"])
    out, err = capsys.readouterr()
    assert info.value.code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bf16 instructions" in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "run" / "model.safetensors").exists()


# --- the bf16 GEMM (kernels.c's mlplab_gemm_bf16, used where the CPU has AVX512-BF16) -----------------------------
@pytest.fixture
def own_gemm():
    import ctypes

    from mlplab.model import kernels

    loaded_kernels()  # built (and cached) before its path is opened
    lib = ctypes.CDLL(str(kernels.library_path()))  # the library kernels.get() built and loaded
    lib.mlplab_gemm_bf16_available.restype = ctypes.c_int
    if not lib.mlplab_gemm_bf16_available():
        pytest.skip("this CPU (or compiler) has no AVX512-BF16 for mlplab_gemm_bf16")
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    gemm = ctypes.CFUNCTYPE(None, i, i, i, i, i, i, f, p, i, p, i, f, p, i)(
        ctypes.cast(lib.mlplab_gemm_bf16, p).value)
    lib.mlplab_gemm_bf16_set_threads.argtypes = (ctypes.c_int,)
    yield gemm, lib.mlplab_gemm_bf16_set_threads
    lib.mlplab_gemm_bf16_set_threads(torch.get_num_threads())
    kernels._gemm_threads.clear()  # set behind Kernels.set_gemm_threads's back: forget what it remembers


def _run_gemm(gemm, ta, tb, m, n, k, alpha, beta, seed=0, pad=3):
    """C (m, n) = alpha op(A) op(B) + beta C through the pointer, on matrices with leading dimensions larger than
    their rows (pad), C's padding columns holding a sentinel; returns (C, the float64 reference, op(A), op(B))."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn((k, m + pad) if ta else (m, k + pad), generator=g).to(torch.bfloat16)
    b = torch.randn((n, k + pad) if tb else (k, n + pad), generator=g).to(torch.bfloat16)
    c = torch.randn(m, n + pad, generator=g)
    op_a = (a[:, :m].t() if ta else a[:, :k]).double()
    op_b = (b[:, :k].t() if tb else b[:, :n]).double()
    ref = alpha * (op_a @ op_b) + beta * c[:, :n].double()
    if beta == 0.0:
        c[:, :n] = float("nan")  # beta 0: C must not be read (BLAS semantics), so its NaNs must not leak
    c[:, n:] = 7.0
    gemm(101, 112 if ta else 111, 112 if tb else 111, m, n, k, alpha, a.data_ptr(), a.shape[1], b.data_ptr(),
         b.shape[1], beta, c.data_ptr(), c.shape[1])
    return c, ref, op_a, op_b


@pytest.mark.parametrize("ta", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("tb", [False, True], ids=["B", "Bt"])
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (5, 7, 3), (6, 64, 2), (7, 65, 5), (13, 100, 31), (128, 512, 784),
                                     (512, 784, 128), (10, 512, 127), (127, 10, 513), (3, 1000, 1)])
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (-0.5, 0.9), (2.0, 1.0)])
def test_own_bf16_gemm_equals_a_float64_product_of_the_bf16_values(own_gemm, ta, tb, m, n, k, alpha, beta):
    gemm, _ = own_gemm
    c, ref, op_a, op_b = _run_gemm(gemm, ta, tb, m, n, k, alpha, beta)
    # the inputs are exact bf16 values, so the only error is float32 accumulation over k terms
    bound = 4 * k * 2.0 ** -24 * (abs(alpha) * (op_a.abs() @ op_b.abs()) + abs(beta) * ref.abs().max()) + 1e-30
    assert ((c[:, :n].double() - ref).abs() <= bound).all()
    assert (c[:, n:] == 7.0).all()  # nothing written past each row's n columns


def test_own_bf16_gemm_is_bit_identical_for_any_thread_count(own_gemm):
    """Each block of C is summed by one thread in a fixed order, so the split between threads changes no bit
    (resume within bf16 stays bit-identical when the thread count differs)."""
    gemm, set_threads = own_gemm
    results = []
    for threads in (1, 2, 3):
        set_threads(threads)
        results.append([_run_gemm(gemm, ta, tb, 130, 700, 257, -0.25, 1.0, seed=5)[0]
                        for ta in (False, True) for tb in (False, True)])
    for other in results[1:]:
        assert all(torch.equal(x, y) for x, y in zip(results[0], other))


def test_bf16_step_uses_the_own_gemm_on_a_cpu_with_avx512_bf16_and_no_amx(own_gemm):
    from mlplab.model import kernels

    if "amx_bf16" in kernels._cpu_flags():
        pytest.skip("with AMX, MKL's bf16 gemm is preferred")
    assert loaded_kernels()[torch.float32].gemm_bf16_name == "mlplab AVX512-BF16"


# --- the bf16 step's numbers --------------------------------------------------------------------------------------
def _bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).float()  # the value a bf16 product input holds


def _emulated_bf16_grads(model, x, y, keys):
    """What the compiled bf16 step computes as gradients, in PyTorch: products of bf16-rounded inputs accumulated in
    float32, everything else float32 (the same masks from the same keys: one per dropout layer, in order).
    Sets p.grad."""
    plan = model.plan
    layer_key = {}
    it = iter(keys)
    for i, (_, _, rate) in enumerate(plan[:-1]):
        if rate > 0:
            layer_key[i] = next(it)
    hs, outs = [x], []
    h = x
    for i, (lin, act, rate) in enumerate(plan):
        z = _bf16(h) @ _bf16(lin.weight.detach()).t() + lin.bias.detach()  # (N, u)
        if i == len(plan) - 1:
            break
        a = torch.relu(z) if act == "relu" else z
        if rate > 0:
            a = a * masks.mask_from_key(a, rate, layer_key[i])
        outs.append(a)
        h = a
        hs.append(h)
    p = torch.softmax(z, 1)
    dz = (p - torch.nn.functional.one_hot(y, p.shape[1]).float()) / x.shape[0]
    for i in range(len(plan) - 1, -1, -1):
        lin, _, _ = plan[i]
        lin.weight.grad = _bf16(dz).t() @ _bf16(hs[i])
        lin.bias.grad = dz.sum(0)
        if i == 0:
            break
        dh = _bf16(dz) @ _bf16(lin.weight.detach())
        _, prev_act, prev_rate = plan[i - 1]
        a = outs[i - 1]
        if prev_act == "relu":
            dz = dh * (a > 0) * (masks.mask_scale(prev_rate) if prev_rate > 0 else 1.0)
        else:
            dz = dh * (masks.mask_from_key(a, prev_rate, layer_key[i - 1]) if prev_rate > 0 else 1.0)
    return p


def test_bf16_gradients_match_a_float64_reference_within_bf16_error(bf16_kernels):
    """Plain SGD at lr 1 makes the update the gradient: W_before - W_after = dL/dW."""
    model = build("64:relu,dropout:0.2,48:relu,10:softmax", 40, seed=1)
    ref = copy.deepcopy(model).double()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(96, 40, generator=gen), torch.randint(0, 10, (96,), generator=gen)
    before = [p.detach().clone() for p in model.parameters()]
    fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=1.0))
    assert engine.choose_route(model, "cpu", torch.float32, fused, precision="bf16").name == "c-step-bf16"
    engine.train_step(model, x, y, "categorical_crossentropy", torch.Generator().manual_seed(5), sgd=fused,
                      precision="bf16")
    grads = [(b - p.detach()).double() for b, p in zip(before, model.parameters())]
    engine.reference_step(ref, x.double(), y, "categorical_crossentropy", torch.Generator().manual_seed(5))
    fp32_model = copy.deepcopy(ref).float()
    for p, q in zip(fp32_model.parameters(), before):
        p.data.copy_(q)
    fused32 = FusedSGD(torch.optim.SGD(fp32_model.parameters(), lr=1.0))
    engine.train_step(fp32_model, x, y, "categorical_crossentropy", torch.Generator().manual_seed(5), sgd=fused32)
    # The bound: bf16 rounds each product input with unit roundoff u = 2^-8, so one product's result is off by at
    # most ~2u sum|a_i b_i|, i.e. 2u times the sum's condition number (about sqrt(k) for k terms of mixed sign).
    # Layer l's gradient comes through 2 (L - 1 - l) + 1 such products.
    u, n_layers, width = 2.0 ** -8, len(model.plan), 64
    for i, (g, p, b, q) in enumerate(zip(grads, ref.parameters(), before, fp32_model.parameters())):
        layer = i // 2
        products = 2 * (n_layers - 1 - layer) + 1
        rel = float((g - p.grad).norm() / p.grad.norm())
        assert rel < 2 * u * products * width ** 0.5, (i, rel)
        g32 = (b - q.detach()).double()
        # really bf16 products: the float32 step is far closer to the float64 reference
        assert float((g32 - p.grad).norm() / p.grad.norm()) < rel / 10, (i, rel)


@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=settings_id)
def test_bf16_master_update_equals_torch_sgd_on_the_same_bf16_gradients(bf16_kernels, settings):
    model = build("24:relu,dropout:0.25,16:linear,dropout:0.1,12:relu,7:softmax", 20, seed=2)
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(twin.parameters(), lr=0.2, **settings)
    fused = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.2, **settings))
    data, gen, twin_gen = (torch.Generator().manual_seed(s) for s in (0, 9, 9))
    for _ in range(4):
        x, y = torch.rand(33, 20, generator=data), torch.randint(0, 7, (33,), generator=data)
        engine.train_step(model, x, y, "categorical_crossentropy", gen, sgd=fused, precision="bf16")
        keys = masks.draw_keys(twin.n_dropout, twin_gen, "cpu")
        _emulated_step(twin, x, y, keys)
        opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6)
    if settings["momentum"]:
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(fused.optimizer.state[p]["momentum_buffer"], opt.state[q]["momentum_buffer"],
                                       rtol=2e-5, atol=2e-6)


def test_vector_bf16_rounding_equals_the_scalar_one_on_every_kind_of_float(own_gemm):
    """The fused step rounds with VCVTNEPS2BF16 where it can (it flushes denormals: those lanes take the integer
    form): the same bits as mlplab_to_bf16 (round to nearest even, NaN quieted with its sign and payload kept) on
    denormals, ties, NaNs, infinities and random bit patterns, in any position of a vector and its tail."""
    import ctypes

    from mlplab.model import kernels

    lib = ctypes.CDLL(str(kernels.library_path()))
    for name in ("mlplab_to_bf16", "mlplab_to_bf16_avx512"):
        getattr(lib, name).argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([0x00000001, 0x00008000, 0x00018000, 0x007fffff, 0x80000001, 0x807fffff, 0x00800000,
                            0x3f808000, 0x3f818000, 0x3f80ffff, 0x7f7fffff, 0x7f800000, 0xff800000, 0x7f800001,
                            0x7fc00000, 0xffffffff, 0x7fbfffff, 0x80000000, 0, 0x3f800000], dtype=torch.int64)
    bits = torch.cat([special, torch.randint(0, 2 ** 32, (100_003,), generator=g, dtype=torch.int64),
                      torch.randint(0, 2 ** 23, (5_000,), generator=g, dtype=torch.int64)])  # denormals
    src = bits.to(torch.int32).view(torch.float32).contiguous()  # the low 32 bits, as a float's bits
    for n in (len(src), 37, 16, 5):
        scalar, vector = (torch.full((n,), 0x1234, dtype=torch.int16) for _ in range(2))
        lib.mlplab_to_bf16(src.data_ptr(), scalar.data_ptr(), n)
        lib.mlplab_to_bf16_avx512(src.data_ptr(), vector.data_ptr(), n)
        assert torch.equal(scalar, vector)
    finite = src[torch.isfinite(src)]
    expected = finite.to(torch.bfloat16).view(torch.int16)  # PyTorch's rounding, where it defines the bits
    out = torch.empty(len(finite), dtype=torch.int16)
    lib.mlplab_to_bf16_avx512(finite.data_ptr(), out.data_ptr(), len(finite))
    assert torch.equal(out, expected)


# --- the fused bf16 step: the element-wise work in the products' epilogues, the same bits as done separately ------
@pytest.fixture
def fused_gemm(own_gemm):
    """The fused step runs with mlplab's own GEMM only (on AMX CPUs MKL's is chosen and these tests would compare
    the unfused step with itself)."""
    if loaded_kernels()[torch.float32].gemm_bf16_name != "mlplab AVX512-BF16":
        pytest.skip("the bf16 step uses MKL's GEMM here (AMX): no fused epilogues")
    return own_gemm


FUSED_NETS = ["300:relu,dropout:0.2,70:relu,dropout:0.35,7:softmax",   # units not multiples of 4, 16 or 64
              "256:linear,dropout:0.3,65:linear,10:softmax",          # a linear layer's dropout, a plain one
              "130:relu,130:relu,3:softmax",                          # relu without dropout
              "300:relu,dropout:0.2,48:relu,dropout:0.3,5:softmax"]   # a product split by row blocks


def _twin_steps(spec, settings, threads, n_steps=3, batch=199, reuse=True):
    """The same steps on two copies of one model: the fused bf16 step (reusing the weights it rounded when
    `reuse`) and the unfused one (the products through the CBLAS interface, the element-wise kernels after
    them, the weights rounded afresh each step). Returns (fused model, its optimizer, unfused model, its
    optimizer, the per-step (loss, correct) of each)."""
    torch.set_num_threads(threads)
    model = build(spec, 200, seed=3)
    twin = copy.deepcopy(model)
    runs = []
    for m, fused in ((model, 1), (twin, 0)):
        sgd = FusedSGD(torch.optim.SGD(m.parameters(), lr=0.05, **settings))
        step = engine.choose_route(m, "cpu", torch.float32, sgd, precision="bf16").step
        assert step is not None and step.bf16
        step.args.fused = fused
        data, gen, stats = torch.Generator().manual_seed(0), torch.Generator().manual_seed(4), []
        for i in range(n_steps):
            x = torch.randn(batch, 200, generator=data)
            y = torch.randint(0, m.plan[-1][0].out_features, (batch,), generator=data)
            stats.append(engine.train_step(m, x, y, "categorical_crossentropy", gen, sgd=sgd, precision="bf16",
                                           weights_untouched=reuse and i > 0))
            assert step.args.weights_rounded == fused  # the fused step ran (and left its rounding current)
        runs.append((m, sgd, stats))
    return runs[0][0], runs[0][1], runs[1][0], runs[1][1], runs[0][2], runs[1][2]


def _assert_same_bits(model, sgd, twin, twin_sgd):
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
        buf, twin_buf = (s.optimizer.state[t].get("momentum_buffer") for s, t in ((sgd, p), (twin_sgd, q)))
        assert (buf is None) == (twin_buf is None)
        if buf is not None:
            assert torch.equal(buf, twin_buf)


@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=settings_id)
@pytest.mark.parametrize("spec", FUSED_NETS)
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_bf16_step_is_bit_identical_to_the_unfused_one(fused_gemm, settings, spec, threads):
    previous = torch.get_num_threads()
    try:
        model, sgd, twin, twin_sgd, stats, twin_stats = _twin_steps(spec, settings, threads)
    finally:
        torch.set_num_threads(previous)
    assert stats == twin_stats  # loss sums and correct counts, per step
    _assert_same_bits(model, sgd, twin, twin_sgd)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fused_bf16_step_at_lr_0_keeps_the_weights_bits_as_the_unfused_one(fused_gemm):
    """lr 0 (a schedule's end): the weight product's alpha is -0, so the update is W = beta W exactly, -0 kept,
    as the CBLAS interface's alpha-0 shortcut computes it."""
    models = []
    for fused in (1, 0):
        model = build("64:relu,dropout:0.2,5:softmax", 40, seed=2)
        with torch.no_grad():
            model.plan[0][0].weight[::3] = -0.0
        sgd = FusedSGD(torch.optim.SGD(model.parameters(), lr=0.0, weight_decay=1e-2))
        engine.choose_route(model, "cpu", torch.float32, sgd, precision="bf16").step.args.fused = fused
        data = torch.Generator().manual_seed(0)
        x, y = torch.randn(50, 40, generator=data), torch.randint(0, 5, (50,), generator=data)
        engine.train_step(model, x, y, "categorical_crossentropy", torch.Generator().manual_seed(1), sgd=sgd,
                          precision="bf16")
        models.append(model)
    for p, q in zip(*(m.parameters() for m in models)):
        assert torch.equal(p.detach().view(torch.int32), q.detach().view(torch.int32))
    assert (models[0].plan[0][0].weight[::3].detach().view(torch.int32) == -2 ** 31).all()  # -0 stayed -0


def test_fused_bf16_step_reuses_its_rounded_weights_only_when_nothing_wrote_them(fused_gemm):
    """After steps promised untouched weights (reusing the rounding of the previous step's weight products: the same
    bits as rounding afresh, above), weights are written between steps. A write PyTorch counts (an in-place op
    under no_grad, as load_state_dict does) is seen even under the promise; a write behind its back (.data) is the
    promise's to exclude: without the promise the weights are rounded afresh, and a wrong promise (the control)
    really does train on the stale rounding."""
    settings = SGD_SETTINGS[2]
    previous = torch.get_num_threads()
    try:
        model, sgd, *_ = _twin_steps(FUSED_NETS[0], settings, 2)
    finally:
        torch.set_num_threads(previous)
    step = engine.choose_route(model, "cpu", torch.float32, sgd, precision="bf16").step
    assert step.args.weights_rounded == 1 and step._rounded_stamp is not None  # the reuse was really in play

    def copy_of(m, s):
        c = copy.deepcopy(m)
        c_sgd = FusedSGD(torch.optim.SGD(c.parameters(), lr=0.05, **settings))
        c_sgd.optimizer.load_state_dict(copy.deepcopy(s.optimizer.state_dict()))  # (.to shares tensors)
        engine.choose_route(c, "cpu", torch.float32, c_sgd, precision="bf16").step.args.fused = 0
        return c, c_sgd

    twin, twin_sgd = copy_of(model, sgd)        # rounds afresh every step
    control, control_sgd = copy_of(model, sgd)
    engine.choose_route(control, "cpu", torch.float32, control_sgd, precision="bf16").step.args.fused = 1
    control_step = engine.choose_route(control, "cpu", torch.float32, control_sgd, precision="bf16").step
    data = torch.Generator().manual_seed(8)
    x, y = torch.randn(199, 200, generator=data), torch.randint(0, 7, (199,), generator=data)

    def step_all(promise_model, promise_control):
        for m, s, promise in ((model, sgd, promise_model), (twin, twin_sgd, False), (control, control_sgd,
                                                                                       promise_control)):
            engine.train_step(m, x, y, "categorical_crossentropy", torch.Generator().manual_seed(9), sgd=s,
                              precision="bf16", weights_untouched=promise)

    step_all(False, False)  # the control's own rounding becomes current too
    assert control_step.args.weights_rounded == 1
    for m in (model, twin):
        with torch.no_grad():  # counted: the promise is wrong, and the version counter catches it
            m.plan[0][0].weight.mul_(0.5)
    control.plan[0][0].weight.data.mul_(0.5)  # not counted
    step_all(True, True)
    _assert_same_bits(model, sgd, twin, twin_sgd)
    assert not torch.equal(control.plan[0][0].weight, twin.plan[0][0].weight)  # a wrong promise is not harmless
    for m in (model, twin):
        m.plan[1][0].weight.data.mul_(0.25)  # not counted: the caller must not promise, and does not
    step_all(False, False)
    _assert_same_bits(model, sgd, twin, twin_sgd)


def test_which_callbacks_may_write_weights_between_batches():
    from mlplab.cli.progress import ConsoleProgress
    from mlplab.train.callbacks import (Callback, EarlyStopping, LambdaCallback,
                                        batch_hooks_may_write_weights)
    from mlplab.train.keras_protocol import KerasAdapter
    from mlplab.train.progress import Progress

    class Writes(Callback):
        def on_batch_end(self, trainer, batch, logs):
            pass

    class KerasBatchHook:
        def on_train_batch_end(self, batch, logs=None):
            pass

    quiet = [Callback(), EarlyStopping(), LambdaCallback(on_epoch_end=lambda *a: None), Progress(3, verbose=0),
             ConsoleProgress(3), KerasAdapter(object(), 3)]
    assert not batch_hooks_may_write_weights(quiet)
    class MyProgress(Progress):  # a hook of its own: Progress's "only reads" is not inherited
        def on_batch_end(self, trainer, batch, logs):
            pass

    class Quiet(Callback):
        writes_weights_between_batches = False

        def on_batch_end(self, trainer, batch, logs):
            pass

    assert not batch_hooks_may_write_weights(quiet + [Quiet()])
    for writer in (Writes(), LambdaCallback(on_batch_end=lambda *a: None), KerasAdapter(KerasBatchHook(), 3),
                   MyProgress(3, verbose=0)):
        assert batch_hooks_may_write_weights(quiet + [writer]), writer


@pytest.mark.parametrize("write", [False, True], ids=["no-writes", "data-writes"])
def test_trainer_reuses_rounded_weights_within_an_epoch_unless_a_batch_hook_may_write(fused_gemm, monkeypatch, write):
    """fit() promises untouched weights from the second batch of each epoch on (the reuse then gives the bits of a
    fit that never promises), unless a callback runs code between batches: a batch hook that writes the weights
    behind PyTorch's back (.data, as a max-norm constraint written in old tutorials does) gets no promise, and
    the control shows that promising anyway would change the result."""
    from mlplab.train import Trainer
    from mlplab.train.callbacks import LambdaCallback

    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(600, 30, generator=gen).numpy(), torch.randint(0, 4, (600,), generator=gen).numpy()

    def clamp(trainer, batch, logs):
        trainer.model.plan[0][0].weight.data.clamp_(-0.05, 0.05)

    batches = 10  # 600 samples in batches of 64 (no validation split)

    def fit(promises: str):
        """promises: "trainer" (as fit decides), "never", or "forced" (from each epoch's second batch, the control)"""
        reused = []
        real = engine.train_step

        def train_step(*args, weights_untouched=False, **kwargs):
            reused.append(weights_untouched)
            promise = {"trainer": weights_untouched, "never": False,
                       "forced": (len(reused) - 1) % batches != 0}[promises]
            return real(*args, weights_untouched=promise, **kwargs)

        monkeypatch.setattr(engine, "train_step", train_step)
        model = build("40:relu,dropout:0.1,4:softmax", 30, seed=1)
        trainer = Trainer(model, lr=0.1, momentum=0.9, batch_size=64, precision="bf16")
        trainer.fit(x, y, epochs=2, callbacks=[LambdaCallback(on_batch_end=clamp)] if write else [])
        monkeypatch.setattr(engine, "train_step", real)
        return model, reused

    model, reused = fit("trainer")
    twin, _ = fit("never")
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))
    assert reused == ([False] * 2 * batches if write else ([False] + [True] * (batches - 1)) * 2)
    if write:  # the control: promising anyway trains on stale roundings, so the check above can fail
        control, _ = fit("forced")
        assert not all(torch.equal(p, q) for p, q in zip(control.parameters(), twin.parameters()))


def _emulated_step(model, x, y, keys):
    with torch.no_grad():
        _emulated_bf16_grads(model, x, y, keys)


# --- training: resume and accuracy ---------------------------------------------------------------------------------
def test_bf16_resume_is_bit_identical(bf16_kernels, tmp_path):
    from mlplab.runs.session import resume_run, train_run

    opts = dict(data="digits", epochs=3, precision="bf16", optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
                batch_size=64)
    whole = train_run(TrainOptions.from_mapping(opts), tmp_path / "whole")
    train_run(TrainOptions.from_mapping({**opts, "epochs": 1}), tmp_path / "part")
    resumed = resume_run(tmp_path / "part", epochs=3)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in whole.history.rows]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history.rows] == strip
    weights = [(tmp_path / run / "model.safetensors").read_bytes() for run in ("whole", "part")]
    assert weights[0] == weights[1]
    import json

    for run in ("whole", "part"):
        manifest = json.loads((tmp_path / run / "manifest.json").read_text())
        assert manifest["environment"]["precision"] == "bf16"
        assert manifest["environment"]["engine_route"] == "c-step-bf16"
        assert manifest["environment"]["bf16_gemm"] == bf16_kernels.gemm_bf16_name  # bf16 bits depend on it
        assert json.loads((tmp_path / run / "config.json").read_text())["train"]["precision"] == "bf16"


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.exists(), reason="Debian's dataset-fashion-mnist package is not installed")
def test_fashion_best_recipe_in_bf16_is_within_0_3_points_of_fp32(bf16_kernels, fashion_best_fp32, tmp_path):
    from mlplab.runs.session import train_run

    accuracy = {"fp32": fashion_best_fp32[1].metrics["test_accuracy"]}  # the session's fp32 run (conftest.py)
    opts = load_train_config(ROOT / "experiments" / "fashion-best.toml")
    opts.precision = "bf16"
    accuracy["bf16"] = train_run(opts, tmp_path / "bf16").metrics["test_accuracy"]
    assert accuracy["bf16"] >= 0.89, accuracy
    assert abs(accuracy["bf16"] - accuracy["fp32"]) <= 0.003, accuracy
