"""The compiled element-wise kernels: bit-for-bit equal to their PyTorch forms, the mask stream equal to SplitMix64
computed with Python integers, and a build that falls back cleanly instead of failing."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from engine_support import HAVE_CC, loaded_kernels

from mlplab.errors import MlplabError
from mlplab.model import build, engine, kernels, masks


def _splitmix64(key: int, j: int) -> int:
    """SplitMix64's output j + 1 from state key, on Python integers (the definition)."""
    m = 2 ** 64 - 1
    z = (key + (j + 1) * 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


@pytest.fixture
def k():
    """The float32/float64 kernels; where a compiler exists they must have built."""
    return loaded_kernels()


KEYS = [0, 1, -1, 2 ** 63 - 1, -(2 ** 63), 0x0123456789ABCDEF, -0x5555555555555555]


@pytest.mark.parametrize("key", KEYS)
def test_torch_mask_words_are_splitmix64(key):
    words = masks.mask_words(key, 37, "cpu")
    expected = [_splitmix64(key % 2 ** 64, j) for j in range(37)]
    assert [w % 2 ** 64 for w in words.tolist()] == expected


def _inputs(n: int, dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, generator=gen, dtype=dtype)
    if n >= 8:  # the awkward values: signed zeros, infinities, NaN
        a[:8] = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1e-38, -1e-38, 3.0], dtype=dtype)
    return a


SIZES = [1, 3, 4, 5, 255, 256, 257, 1001, 128 * 512]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("rate", [0.2, 0.5, 0.99999])
def test_dropout_kernels_equal_the_pytorch_forms_bit_for_bit(k, dtype, n, rate):
    kd = k[dtype]
    for key in KEYS[:4]:
        a = _inputs(n, dtype, seed=n)
        ref = a.clone().relu_().mul_(masks.mask_from_key(a, rate, key))
        got = masks.relu_dropout_(a.clone(), rate, key, kd)
        assert _same_bits(got, ref)

        ref = a * masks.mask_from_key(a, rate, key)
        assert _same_bits(masks.dropout(a, rate, key, kd), ref)
        assert _same_bits(masks.dropout(a, rate, key, None), ref)

        g = _inputs(n, dtype, seed=n + 1)
        ref = g.clone().mul_(masks.mask_from_key(g, rate, key))
        assert _same_bits(masks.dropout_backward_(g.clone(), rate, key, kd), ref)
        assert _same_bits(masks.dropout_backward_(g.clone(), rate, key, None), ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("scale", [1.0, masks.mask_scale(0.2), masks.mask_scale(0.7)])
def test_relu_backward_kernel_equals_pytorch(k, dtype, n, scale):
    a, g = _inputs(n, dtype, seed=2 * n), _inputs(n, dtype, seed=2 * n + 1)
    ref = masks.relu_backward_(g.clone(), a, scale, None)
    assert _same_bits(masks.relu_backward_(g.clone(), a, scale, k[dtype]), ref)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal including NaNs, with -0.0 == 0.0 (the only bits allowed to differ: relu of -0.0)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_masks_are_the_same_stream(dtype):
    like = torch.empty(300, 301)
    ref = masks.mask_from_key(like, 0.2, 99)  # scale 65536/52429 is not exact in half precision: compare keeps
    got = masks.mask_from_key(like.to(dtype), 0.2, 99)
    assert got.dtype == dtype and torch.equal(got > 0, ref > 0)


def test_masks_drop_at_the_asked_rate_and_layers_differ():
    like = torch.empty(256, 1000)
    m1 = masks.mask_from_key(like, 0.3, 12345)
    m2 = masks.mask_from_key(like, 0.3, 12346)  # the next key: no shifted copy of the same stream
    kept1, kept2 = (m1 > 0).float(), (m2 > 0).float()
    n = like.numel()
    sd = math.sqrt(0.3 * 0.7 / n)
    assert abs(kept1.mean().item() - 0.7) < 5 * sd
    # independent masks agree on 0.7^2 + 0.3^2 = 0.58 of the units; neighbours within a mask are uncorrelated
    assert abs((kept1 == kept2).float().mean().item() - 0.58) < 5 * math.sqrt(0.58 * 0.42 / n)
    flat = kept1.flatten()
    corr = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1].item()
    assert abs(corr) < 5 / math.sqrt(n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_cross_entropy_kernel_matches_torch(k, dtype):
    gen = torch.Generator().manual_seed(0)
    z = (torch.randn(300, 10, generator=gen) * 6).to(dtype)
    z[0] = 0.0       # a tie everywhere: argmax is the first index, as torch.argmax
    z[1, 3] = 80.0   # a confident row
    y = torch.randint(0, 10, (300,), generator=gen)
    kd = k[dtype]
    loss_sum, correct, dz = engine._training_loss(z, y, "categorical_crossentropy", "softmax", kd)
    ref_loss, ref_correct, ref_dz = engine._training_loss(z, y, "categorical_crossentropy", "softmax", None)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert isinstance(loss_sum, float)
    assert loss_sum == pytest.approx(float(ref_loss), rel=tol)
    assert correct == float(ref_correct)
    torch.testing.assert_close(dz, ref_dz, rtol=tol, atol=tol / 300)


def test_softmax_cross_entropy_kernel_propagates_nan_and_refuses_bad_labels(k):
    z = torch.randn(4, 3)
    z[2, 1] = math.nan
    loss_sum, _, _ = engine._training_loss(z, torch.tensor([0, 1, 2, 0]), "categorical_crossentropy", "softmax",
                                           k[torch.float32])
    assert math.isnan(loss_sum)
    model = build("5:relu,3:softmax", 2, seed=0)
    with pytest.raises(MlplabError, match=r"label 3 is outside 0\.\.2"):
        engine.train_step(model, torch.randn(4, 2), torch.tensor([0, 1, 3, 0]), "categorical_crossentropy")


def test_whole_step_same_masks_and_gradients_on_both_paths(k, monkeypatch):
    """The notebook's net, float32: the compiled path and the PyTorch path draw the same masks from the same
    generator, so the gradients agree to float rounding (the loss kernel sums in another order)."""
    spec = "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(128, 784, generator=gen), torch.randint(0, 10, (128,), generator=gen)
    model = build(spec, 784, seed=0)
    loss_c, _ = engine.train_step(model, x, y, "categorical_crossentropy", torch.Generator().manual_seed(1))
    compiled = [p.grad.clone() for p in model.parameters()]
    with engine.use_route("torch-ops"):
        loss_t, _ = engine.train_step(model, x, y, "categorical_crossentropy", torch.Generator().manual_seed(1))
    assert isinstance(loss_c, float) and isinstance(loss_t, torch.Tensor)  # really the two paths
    assert float(loss_c) == pytest.approx(float(loss_t), rel=1e-5)
    for a, p in zip(compiled, model.parameters()):
        assert ((a == 0) == (p.grad == 0)).float().mean() > 0.999  # the same units dropped
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)


# --- the build ----------------------------------------------------------------------------------------------------
@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty kernel cache and no loaded library; restored afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLPLAB_KERNELS", raising=False)
    monkeypatch.delenv("CC", raising=False)
    kernels._reset()
    yield tmp_path
    kernels._reset()


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_build_caches_one_library_and_reuses_it(fresh):
    assert kernels.get() is not None and kernels.failure() is None
    assert kernels.status().startswith("compiled C kernels, the whole step in C on PyTorch's BLAS (")
    libs = list((fresh / "cache" / "mlplab" / "kernels").glob("*/libmlplab_kernels.so"))
    assert len(libs) == 1 and not list(libs[0].parent.glob("*.tmp"))
    mtime = libs[0].stat().st_mtime_ns
    kernels._reset()
    assert kernels.get() is not None
    assert libs[0].stat().st_mtime_ns == mtime  # loaded from the cache, not rebuilt


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_a_damaged_cached_library_is_rebuilt(fresh):
    lib = kernels.library_path()
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"not a shared library")  # e.g. a disk that lost the file's blocks
    assert kernels.get() is not None
    assert lib.read_bytes()[:4] == b"\x7fELF"


@pytest.mark.parametrize("cc, reason", [
    ("/nonexistent/cc", "the C compiler /nonexistent/cc could not run"),
    ("false", "the C compiler false failed"),
])
def test_a_broken_compiler_falls_back_with_the_reason(fresh, monkeypatch, cc, reason):
    monkeypatch.setenv("CC", cc)
    assert kernels.get() is None
    assert kernels.status().startswith(f"PyTorch fallback ({reason}")
    assert isinstance(kernels.failure(), kernels.BuildFailed)  # the kind is a type, not a message prefix
    model = build("8:relu,dropout:0.5,3:softmax", 4, seed=0)  # training still works, on PyTorch ops
    loss_sum, _ = engine.train_step(model, torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]),
                                    "categorical_crossentropy")
    assert isinstance(loss_sum, torch.Tensor) and torch.isfinite(loss_sum)


def test_switched_off_by_environment(fresh, monkeypatch):
    monkeypatch.setenv("MLPLAB_KERNELS", "0")
    assert kernels.get() is None
    assert kernels.status() == "PyTorch fallback (MLPLAB_KERNELS=0)"
    assert isinstance(kernels.failure(), kernels.KernelsOff)


@pytest.mark.skipif(not shutil.which("gcc"), reason="no gcc")
def test_cc_may_carry_arguments(fresh, monkeypatch):
    monkeypatch.setenv("CC", "gcc -DMLPLAB_UNUSED_MACRO=1")
    assert kernels.get() is not None, kernels.status()


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_unwritable_cache_builds_for_the_process_only(fresh):
    (fresh / "cache").write_text("a file where the cache folder should be")  # fails for root too
    assert kernels.get() is not None
    assert "built for this process only: cannot write the kernel cache" in kernels.status()


def test_unwritable_cache_and_no_compiler_falls_back(fresh, monkeypatch):
    (fresh / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert kernels.get() is None
    assert kernels.status().startswith("PyTorch fallback (cannot write the kernel cache")
    assert isinstance(kernels.failure(), kernels.CacheUnwritable)


def test_cli_trains_without_a_compiler_and_says_so(tmp_path):
    """A machine without a working C compiler: training works, on PyTorch ops, with one note on stderr."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, CC="/nonexistent/cc", XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("MLPLAB_KERNELS", None)
    proc = subprocess.run([sys.executable, "-m", "mlplab", "train", "--data", "digits", "--epochs", "1",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("mlplab: note:")]
    assert notes == ["mlplab: note: training uses the slower PyTorch fallback (the C compiler /nonexistent/cc "
                     "could not run: No such file or directory)"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["environment"]["cpu_kernels"].startswith("PyTorch fallback (the C compiler")


def test_the_step_structs_match_the_library_layout(k):
    """kernels.py's Step/Layer and kernels.c's mlplab_step/mlplab_layer agree on every size and offset (the load
    refuses a library that disagrees; this checks the check sees real numbers)."""
    import ctypes

    expected = kernels._layout()
    assert expected[:2] == [ctypes.sizeof(kernels.Layer), ctypes.sizeof(kernels.Step)] and expected[0] >= 80
    lib = ctypes.CDLL(str(kernels.library_path()))
    lib.mlplab_step_layout.restype = ctypes.c_int64
    out = (ctypes.c_int64 * len(expected))()
    assert lib.mlplab_step_layout(ctypes.byref(out), ctypes.c_int64(len(expected))) == len(expected)
    assert list(out) == expected
    assert lib.mlplab_step_layout(ctypes.byref(out), ctypes.c_int64(3)) == -1
