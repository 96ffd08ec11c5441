"""Training precision: fp32, or bf16 mixed precision (Keras's mixed_bfloat16 semantics).

bf16 means the matrix products take bfloat16 inputs and accumulate in float32, while master weights, optimizer
state, loss, softmax and metrics stay float32. On the CPU that needs bf16 instructions: without them the products
would run in a slow emulation, so bf16 is refused there (check()). set_cpu_bf16() overrides the detection (tests
simulate a CPU without bf16 through it; a user can forbid bf16 with it).
"""

from __future__ import annotations

import torch

from mlplab.errors import MlplabError

PRECISIONS = ("fp32", "bf16")
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
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_bf16():
            raise MlplabError(f"--precision bf16 needs a CPU with bf16 instructions (AVX512-BF16 or AMX); this one "
                              f"({torch.backends.cpu.get_cpu_capability()}) has none: use --precision fp32")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise MlplabError("--precision bf16 needs a GPU with bfloat16 support; use --precision fp32")
        if device.type not in ("cpu", "cuda"):
            raise MlplabError(f"--precision bf16 runs on cpu and cuda devices, not {device.type}; use fp32")
    return precision


def set_tf32(enabled: bool) -> None:
    """CUDA, fp32 runs: let float32 matrix products use TF32 tensor cores (inputs rounded to 10 mantissa bits,
    float32 accumulation), PyTorch's switch. Off by default: fp32 then means float32 products everywhere."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
