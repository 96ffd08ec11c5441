"""Dropout masks from a counter-based generator, and the dropout/relu steps of the engine that use them.

Why counter-based: a mask is a pure function of (key, position), so the engine draws one 64-bit key per dropout
layer per step from the run's torch.Generator (which checkpoints save and resume restores) and never stores a
mask: the forward applies it, the backward regenerates it. With PyTorch's own generator a mask cost a generator
call per element (torch's bernoulli_ ~9 ns per element on the CPU, random_ ~1.5 ns per unit), which was most
of the element-wise time of a training step.

The stream (also in kernels.c, which computes exactly the same): word j of a layer's mask is SplitMix64's
output j + 1 from the state `key`; the words are read as signed 16-bit integers s in memory order (.view(int16):
on little-endian machines element i takes bits 16 (i % 4) and up of word i // 4) and the unit is kept when
s < keep_units - 32768, so the keep probability is 1 - rate rounded to a multiple of 1/65536 (rate 0.2 keeps
52429/65536 = 0.80000305 of the units). Kept units are scaled by 65536 / keep_units (inverted dropout).

The engine's steps below use the compiled kernels (model/kernels.py) for float32/float64 CPU tensors and PyTorch ops
otherwise (CUDA, other dtypes, MLPLAB_KERNELS=0, no C compiler); both give the same bits (tests/test_kernels.py).
On CUDA the keys stay on the device, so no step waits for the GPU.
"""

from __future__ import annotations

import functools
import threading

import torch


# SplitMix64's constants as signed 64-bit integers: PyTorch's int64 arithmetic wraps like uint64's mod 2^64
_GOLDEN = 0x9E3779B97F4A7C15 - 2 ** 64
_MIX1 = 0xBF58476D1CE4E5B9 - 2 ** 64
_MIX2 = 0x94D049BB133111EB - 2 ** 64


def keep_units(rate: float) -> int:
    """How many of 65536 equally likely 16-bit values keep a unit (at least one: a rate of 0.99999 must not
    divide by zero)."""
    return max(1, round((1.0 - rate) * 65536))


def keep_probability(rate: float) -> float:
    """The keep probability dropout actually uses: 1 - rate rounded to a multiple of 1/65536."""
    return keep_units(rate) / 65536


def mask_scale(rate: float) -> float:
    """The factor on kept units: 1 / keep_probability(rate)."""
    return 65536 / keep_units(rate)


@functools.lru_cache(maxsize=256)
def kernel_constants(rate: float) -> tuple[int, float]:
    """(threshold on the signed 16-bit draws, scale of kept units); cached: every step uses them."""
    return keep_units(rate) - 32768, mask_scale(rate)


def draw_keys(count: int, generator: torch.Generator | None, device) -> list:
    """`count` mask keys from the generator (torch's default RNG when None), one random_ call.

    CPU: Python ints (what the C kernels take). Other devices: 0-d int64 tensors on the device (no host sync).
    """
    device = torch.device(device)
    if device.type == "cpu":
        # a step draws its keys every ~3 ms: reuse a small per-thread buffer instead of allocating one
        buffers = getattr(_scratch, "keys", None)
        if buffers is None:
            buffers = _scratch.keys = {}
        buf = buffers.get(count)
        if buf is None:
            buf = buffers[count] = torch.empty(count, dtype=torch.int64)
        return buf.random_(-(2 ** 63), None, generator=generator).tolist()
    return list(torch.empty(count, dtype=torch.int64, device=device).random_(-(2 ** 63), None, generator=generator))


_scratch = threading.local()


# --- the PyTorch form of the stream (the fallback, and the definition the kernels are tested against) ----------
def mask_words(key, n_words: int, device) -> torch.Tensor:
    """(n_words,) int64: SplitMix64's outputs 1..n_words from state `key` (int or 0-d int64 tensor)."""
    z = torch.arange(1, n_words + 1, dtype=torch.int64, device=device).mul_(_GOLDEN).add_(key)
    # x >> k on int64 is an arithmetic shift; masking off the copied sign bits makes it the logical shift
    z ^= (z >> 30) & ((1 << 34) - 1)
    z *= _MIX1
    z ^= (z >> 27) & ((1 << 37) - 1)
    z *= _MIX2
    z ^= (z >> 31) & ((1 << 33) - 1)
    return z


def mask_from_key(like: torch.Tensor, rate: float, key) -> torch.Tensor:
    """The inverted-dropout mask shaped like `like`: 0 for dropped units, mask_scale(rate) for kept ones."""
    n = like.numel()
    u16 = mask_words(key, (n + 3) // 4, like.device).view(torch.int16)[:n].view(like.shape)  # memory order
    threshold, scale = kernel_constants(rate)
    if like.dtype in (torch.float32, torch.float64):
        # float32/64 hold every 16-bit integer exactly, and a float-output compare is faster than a bool pass
        mask = torch.empty_like(like).copy_(u16)
        torch.lt(mask, threshold, out=mask)
    else:  # float16/bfloat16 would round the draws: compare the integers
        mask = torch.lt(u16, threshold).to(like.dtype)
    return mask.mul_(scale)


def draw_mask(like: torch.Tensor, rate: float, generator: torch.Generator | None) -> torch.Tensor:
    """A mask with a fresh key from the generator (the reference and the tests use it)."""
    return mask_from_key(like, rate, draw_keys(1, generator, like.device)[0])


# --- the engine's steps: compiled kernel where given, else the PyTorch form ---------------------------------------
# `k` is kernels.for_tensor(x) for the step's input: a Kernels for CPU float32/float64 (the tensors these functions
# get are fresh contiguous outputs of the step's own ops), None elsewhere. Keys are ints on the CPU.
def relu_dropout_(z: torch.Tensor, rate: float, key, k=None) -> torch.Tensor:
    """z <- relu(z) * mask, in place (the forward of a relu layer followed by dropout)."""
    if k is not None:
        k.relu_dropout_forward(z.data_ptr(), z.numel(), key, *kernel_constants(rate))
        return z
    return z.relu_().mul_(mask_from_key(z, rate, key))


def dropout(a: torch.Tensor, rate: float, key, k=None) -> torch.Tensor:
    """a * mask as a new tensor (a is kept: its activation's backward reads it)."""
    if k is not None:
        out = torch.empty_like(a)
        k.dropout_forward(a.data_ptr(), out.data_ptr(), a.numel(), key, *kernel_constants(rate))
        return out
    return a * mask_from_key(a, rate, key)


def dropout_backward_(g: torch.Tensor, rate: float, key, k=None) -> torch.Tensor:
    """g <- g * mask, in place, the mask regenerated from its key."""
    if k is not None:
        k.dropout_backward(g.data_ptr(), g.numel(), key, *kernel_constants(rate))
        return g
    return g.mul_(mask_from_key(g, rate, key))


def relu_backward_(g: torch.Tensor, a: torch.Tensor, scale: float = 1.0, k=None) -> torch.Tensor:
    """g <- g * (a > 0 ? scale : 0), in place: relu's backward from its output a (scale 1), or relu + dropout's
    from the masked output (positive exactly where the unit was active and kept; scale = mask_scale(rate))."""
    if k is not None:
        k.relu_backward(g.data_ptr(), a.data_ptr(), g.numel(), scale)
        return g
    # a float-output compare then one multiply: ~5x faster on the CPU than aten.threshold_backward
    factor = torch.gt(a, 0, out=torch.empty_like(a))
    if scale != 1.0:
        factor.mul_(scale)
    return g.mul_(factor)
