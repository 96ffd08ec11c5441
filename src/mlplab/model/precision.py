"""Training precision: fp32, bf16 mixed precision (Keras's mixed_bfloat16 semantics), tf32 (CUDA only), or auto
(bf16 where the device has bf16 instructions, else fp32; check() resolves it, the manifest records the result).

bf16 means the matrix products take bfloat16 inputs and accumulate in float32, while master weights, optimizer
state, loss, softmax and metrics stay float32. On the CPU that needs bf16 instructions: without them the products
would run in a slow emulation, so bf16 is refused there (check()). set_cpu_bf16() overrides the detection (tests
simulate a CPU without bf16 through it; a user can forbid bf16 with it).

tf32 is fp32 training whose float32 matrix products may use a CUDA GPU's TensorFloat-32 tensor cores (inputs
rounded to 10 mantissa bits, float32 accumulation; PyTorch's allow_tf32 switch, on for the duration of fit): the
engine runs its fp32 route (engine_precision). It needs an Ampere or newer GPU; elsewhere it is refused.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from mlplab.errors import MlplabError

PRECISIONS = ("fp32", "bf16", "tf32", "auto")  # auto: bf16 where the device has it, else fp32
ALIASES = {"mixed_bfloat16": "bf16", "float32": "fp32"}  # Keras's policy names

_cpu_bf16_override: bool | None = None


def normalize(name) -> str:
    """The canonical precision name for a name or alias; MlplabError listing the allowed values otherwise."""
    if isinstance(name, str):
        key = name.strip().lower()
        key = ALIASES.get(key, key)
        if key in PRECISIONS:
            return key
    raise MlplabError(f"unknown precision {name!r}; allowed: {', '.join(PRECISIONS)} "
                      f"(or Keras's {', '.join(ALIASES)})")


def set_cpu_bf16(available: bool | None) -> bool | None:
    """Override whether this CPU counts as having bf16 instructions (None: detect); returns the previous value."""
    global _cpu_bf16_override
    previous, _cpu_bf16_override = _cpu_bf16_override, available
    return previous


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX on x86), as oneDNN in PyTorch
    reports it; torch.backends.cpu.get_cpu_capability() names the vector width only."""
    if _cpu_bf16_override is not None:
        return _cpu_bf16_override
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check(precision: str, device) -> str:
    """The canonical precision for training on `device`, or MlplabError where it cannot run there."""
    precision = normalize(precision)
    device = torch.device(device)
    if precision == "auto":  # a recipe that runs everywhere, in bf16 where that is fast
        has_bf16 = ((device.type == "cpu" and cpu_has_bf16())
                    or (device.type == "cuda" and torch.cuda.is_bf16_supported()))
        return "bf16" if has_bf16 else "fp32"
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_bf16():
            raise MlplabError(f"--precision bf16 needs a CPU with bf16 instructions (AVX512-BF16 or AMX); this one "
                              f"({torch.backends.cpu.get_cpu_capability()}) has none: use --precision fp32")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise MlplabError("--precision bf16 needs a GPU with bfloat16 support; use --precision fp32")
        if device.type not in ("cpu", "cuda"):
            raise MlplabError(f"--precision bf16 runs on cpu and cuda devices, not {device.type}; use fp32")
    if precision == "tf32":
        if device.type != "cuda":
            raise MlplabError(f"--precision tf32 is TensorFloat-32 on CUDA GPUs; on {device.type} use fp32 or bf16")
        if torch.cuda.get_device_capability(device) < (8, 0):
            raise MlplabError("--precision tf32 needs an Ampere or newer GPU (compute capability 8.0); use fp32")
    return precision


def engine_precision(precision: str) -> str:
    """What the engine's routes take: bf16, or fp32 (tf32 is fp32 with PyTorch's TF32 switch on)."""
    return "bf16" if precision == "bf16" else "fp32"


def set_tf32(enabled: bool) -> bool:
    """CUDA, fp32 runs: let float32 matrix products use TF32 tensor cores (inputs rounded to 10 mantissa bits,
    float32 accumulation), PyTorch's switch; returns the previous setting. Off by default: fp32 then means
    float32 products everywhere."""
    previous = bool(torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    return previous


@contextmanager
def products_for(precision: str):
    """For the duration of a with block (fit): PyTorch's TF32 switch on for tf32, as it was otherwise."""
    if precision != "tf32":
        yield
        return
    previous = set_tf32(True)
    try:
        yield
    finally:
        set_tf32(previous)
