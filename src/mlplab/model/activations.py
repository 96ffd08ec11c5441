"""The activation table: one record per activation, read by the spec grammar, the MLP module, the engine and the
compiled step (adding an activation touches this file, plus kernels.c for a compiled form).

Each record holds the reference forward (out of place, autograd-friendly: the definition every other form is
tested against), the engine's forward (in place where its backward needs only the output), the closed-form
backward dL/dz from dL/da, what that backward reads (the output a, or the pre-activation z), and the bit kernels.c's
whole step uses for it (None: no compiled form, so nets with it take the op-by-op route).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F

from mlplab.errors import MlplabError
from mlplab.model import masks

# Keras 3's leaky_relu default (negative_slope=0.2); torch's default would be 0.01.
LEAKY_SLOPE = 0.2
# kernels.c's layer codes (struct mlplab_layer.flags): bit 0 relu, bit 1 dropout after the layer
COMPILED_RELU, COMPILED_DROPOUT = 1, 2

_aten = torch.ops.aten


@dataclass(frozen=True)
class Activation:
    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]    # reference, out of place
    forward_: Callable[[torch.Tensor], torch.Tensor]   # the engine's: in place when `needs` is "output"
    backward: Callable[..., torch.Tensor]              # (g = dL/da, a, z) -> dL/dz; may modify g in place
    needs: str                                         # what backward reads: "output" or "input" (z kept)
    compiled: int | None                               # kernels.c's code for the whole step, or None


_RECORDS = (
    Activation("relu", torch.relu, torch.relu_, lambda g, a, z: masks.relu_backward_(g, a), "output", COMPILED_RELU),
    Activation("softplus", F.softplus, F.softplus,
               lambda g, a, z: g.mul_(torch.expm1(a.neg()).neg_()),  # sigmoid(z) = 1 - exp(-softplus(z))
               "output", None),
    Activation("sigmoid", torch.sigmoid, torch.sigmoid_,
               lambda g, a, z: _aten.sigmoid_backward(g, a), "output", None),  # g * a * (1 - a)
    Activation("tanh", torch.tanh, torch.tanh_,
               lambda g, a, z: _aten.tanh_backward(g, a), "output", None),  # g * (1 - a^2)
    Activation("softmax", lambda z: torch.softmax(z, dim=-1), lambda z: torch.softmax(z, dim=-1),
               lambda g, a, z: _aten._softmax_backward_data(g, a, 1, a.dtype),  # a * (g - sum(g * a))
               "output", None),
    Activation("linear", lambda z: z, lambda z: z, lambda g, a, z: g, "output", 0),
    Activation("gelu", F.gelu, F.gelu,  # exact (erf) form, Keras's default; out of place: z is kept
               lambda g, a, z: _aten.gelu_backward(g, z), "input", None),
    Activation("leaky_relu", lambda z: F.leaky_relu(z, LEAKY_SLOPE), lambda z: F.leaky_relu_(z, LEAKY_SLOPE),
               # sign(a) == sign(z) for a positive slope, so the output serves as the input
               lambda g, a, z: _aten.leaky_relu_backward(g, a, LEAKY_SLOPE, True), "output", None),
)

REGISTRY: dict[str, Activation] = {a.name: a for a in _RECORDS}
NAMES = tuple(REGISTRY)  # the order error messages list them in


def get(name: str) -> Activation:
    try:
        return REGISTRY[name]
    except KeyError:
        raise MlplabError(f"unknown activation {name!r}; allowed: {', '.join(NAMES)}") from None
