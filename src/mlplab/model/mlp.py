"""The MLP nn.Module: dense and dropout layers from a spec, Keras-style names, Keras-order weights.

Weights are stored torch-style, as nn.Linear children named `dense_1`, `dense_2`, ... (weight (out, in), bias
(out,)), so state_dict keys read `dense_1.weight` and any torch tool works on the module. get_weights/set_weights
speak Keras's order and layout instead: W as (in, out), then b, per dense layer.

forward() is the plain autograd path (the reference the engine is tested against); training goes through
mlplab.model.engine, which computes the same thing in closed form.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from mlplab.errors import MlplabError
from mlplab.model import activations
from mlplab.model.activations import LEAKY_SLOPE  # noqa: F401  (kept importable from here)
from mlplab.model.spec import LayerSpec, canonical, layer_names, parse_spec

INITS = ("glorot_uniform", "he_uniform", "he_normal", "glorot_normal")
# Keras draws its *_normal initialisers from a normal truncated at 2 std and rescales the std by this constant so
# that the truncated distribution keeps the intended variance.
_TRUNC_STD = 0.87962566103423978


def activate(z: torch.Tensor, name: str) -> torch.Tensor:
    """Out-of-place activation (autograd-friendly): the reference definition, from the activation table."""
    return activations.get(name).forward(z)


def _init_weight(w: torch.Tensor, init: str, generator: torch.Generator | None) -> None:
    fan_out, fan_in = w.shape  # torch layout (out, in)
    if init == "glorot_uniform":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        w.uniform_(-limit, limit, generator=generator)
    elif init == "he_uniform":
        limit = math.sqrt(6.0 / fan_in)
        w.uniform_(-limit, limit, generator=generator)
    else:
        fan = fan_in if init == "he_normal" else (fan_in + fan_out) / 2.0
        std = math.sqrt(2.0 / fan if init == "he_normal" else 1.0 / fan) / _TRUNC_STD
        nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std, generator=generator)


class MLP(nn.Module):
    """A stack of dense and dropout layers built from a spec (see mlplab.model.spec)."""

    def __init__(self, layers: list[LayerSpec], input_dim: int, init: str = "glorot_uniform"):
        super().__init__()
        self.layer_specs = list(layers)
        self.spec = canonical(self.layer_specs)
        self.input_dim = int(input_dim)
        self.init = init
        self.layer_names = layer_names(self.layer_specs)
        dense = [s for s in self.layer_specs if s.kind == "dense"]
        self.output_activation = dense[-1].activation
        self.n_outputs = dense[-1].units
        fan_in = self.input_dim
        for name, s in zip(self.layer_names, self.layer_specs):
            if s.kind == "dense":
                self.add_module(name, nn.Linear(fan_in, s.units))
                fan_in = s.units
            else:
                self.add_module(name, nn.Dropout(s.rate))
        # The engine's plan: one (linear, activation, dropout rate after it) per dense layer, precomputed so that
        # the hot loop does no name lookups.
        # A dropout before the first dense layer (Keras allows it: noise on the inputs) is `input_rate`.
        self.plan: list[tuple[nn.Linear, str, float]] = []
        self.input_rate = 0.0
        for name, s in zip(self.layer_names, self.layer_specs):
            if s.kind == "dense":
                self.plan.append((getattr(self, name), s.activation, 0.0))
            elif not self.plan:
                self.input_rate = s.rate
            else:
                lin, act, _ = self.plan[-1]
                self.plan[-1] = (lin, act, s.rate)
        # masks drawn per training step: the input's first, then one per hidden layer with dropout
        self.n_dropout = (sum(1 for _, _, rate in self.plan[:-1] if rate > 0.0)
                          + (1 if self.input_rate > 0.0 else 0))

    # --- forward paths ----------------------------------------------------------------------------------------
    def _run(self, x: torch.Tensor, stop_before_last_activation: bool = False, want=None):
        h = x  # (N, input_dim)
        outs = {}
        last = len(self.layer_names) - 1
        for i, (name, s) in enumerate(zip(self.layer_names, self.layer_specs)):
            module = getattr(self, name)
            if s.kind == "dense":
                h = module(h)  # (N, units)
                if not (i == last and stop_before_last_activation):
                    h = activate(h, s.activation)
            else:
                h = module(h)  # nn.Dropout: identity in eval mode, inverted scaling in train mode
            if want is not None and name in want:
                outs[name] = h
                if len(outs) == len(want):
                    break
        return outs if want is not None else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs after the output activation (probabilities for a softmax output); (N, n_outputs)."""
        return self._run(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation of the last dense layer; (N, n_outputs)."""
        return self._run(x, stop_before_last_activation=True)

    def _as_input(self, x) -> torch.Tensor:
        p = self.dense_1.weight
        t = torch.as_tensor(x)
        if t.ndim != 2 or t.shape[1] != self.input_dim:
            raise MlplabError(f"the model takes inputs of shape (N, {self.input_dim}), got {tuple(t.shape)}")
        return t.to(device=p.device, dtype=p.dtype)

    def layer_outputs(self, x, names) -> dict[str, torch.Tensor]:
        """Outputs of the named layers for inputs x, in inference mode (dropout off), in one forward pass.

        names: a layer name or a list of them (see layer_names). A dropout layer's output equals its input at
        inference. The pass stops after the last requested layer.
        """
        wanted = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in wanted if n not in self.layer_names]
        if unknown or not wanted:
            raise MlplabError(f"unknown layer {unknown[0] if unknown else '(none given)'!r}; "
                              f"allowed: {', '.join(self.layer_names)}")
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                outs = self._run(self._as_input(x), want=set(wanted))
        finally:
            self.train(was_training)
        return {n: outs[n] for n in wanted}

    # --- weights in Keras order -------------------------------------------------------------------------------
    def dense_layers(self) -> list[tuple[str, nn.Linear]]:
        return [(n, getattr(self, n)) for n, s in zip(self.layer_names, self.layer_specs) if s.kind == "dense"]

    def get_weights(self) -> list[np.ndarray]:
        """[W_1 (in, out), b_1 (out,), W_2, b_2, ...] as numpy copies, Keras's order and layout."""
        out = []
        for _, lin in self.dense_layers():
            out.append(lin.weight.detach().cpu().numpy().T.copy())  # (in, out)
            out.append(lin.bias.detach().cpu().numpy().copy())      # (out,)
        return out

    def set_weights(self, weights) -> None:
        """Load [W_1 (in, out), b_1, ...] (Keras order); shapes are checked before anything is changed."""
        dense = self.dense_layers()
        weights = list(weights)
        if len(weights) != 2 * len(dense):
            raise MlplabError(f"set_weights needs {2 * len(dense)} arrays (W and b for each of {len(dense)} dense "
                              f"layers), got {len(weights)}")
        arrays = []
        for i, (name, lin) in enumerate(dense):
            for j, (kind, want) in enumerate((("W", (lin.in_features, lin.out_features)),
                                              ("b", (lin.out_features,)))):
                a = weights[2 * i + j]
                a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
                if a.shape != want:
                    raise MlplabError(f"set_weights: {name} {kind} must have shape {want}, got {a.shape}")
                if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
                    raise MlplabError(f"set_weights: {name} {kind} must be real numbers, got dtype {a.dtype}")
                arrays.append(a)
        with torch.no_grad():
            for i, (_, lin) in enumerate(dense):
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(arrays[2 * i].T)))  # (out, in)
                lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(arrays[2 * i + 1])))

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, input_dim={self.input_dim}"


# 500M float32 parameters = 2 GiB of weights (plus as much again for gradients and optimizer state): far beyond
# any MLP on these datasets, and a clear error instead of an allocator failure for a mistyped spec.
MAX_PARAMETERS = 500_000_000


def count_parameters(layers, input_dim: int) -> int:
    """Weights + biases of the dense layers, computed from the spec without allocating anything."""
    total, width = 0, input_dim
    for layer in layers:
        if layer.kind == "dense":
            total += (width + 1) * layer.units
            width = layer.units
    return total


def build(spec, input_dim: int, *, init: str = "glorot_uniform", seed: int | None = None) -> MLP:
    """Build an MLP from a spec string (or parsed LayerSpecs) for `input_dim` inputs.

    Weights: `init` (Keras's glorot_uniform by default); biases: zeros. `seed` makes the initialisation
    reproducible without touching torch's global RNG; None draws from the global RNG.
    """
    layers = parse_spec(spec)
    if isinstance(input_dim, bool) or not isinstance(input_dim, (int, np.integer)) or input_dim < 1:
        raise MlplabError(f"input size must be a whole number >= 1, got {input_dim!r}")
    if init not in INITS:
        raise MlplabError(f"unknown initializer {init!r}; allowed: {', '.join(INITS)}")
    n_params = count_parameters(layers, int(input_dim))
    if n_params > MAX_PARAMETERS:
        raise MlplabError(f"the model would have {n_params:,} parameters ({n_params * 4 / 2**30:.1f} GiB of float32 "
                          f"weights); at most {MAX_PARAMETERS:,} are allowed: use fewer or smaller layers")
    model = MLP(layers, int(input_dim), init)
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for _, lin in model.dense_layers():
            _init_weight(lin.weight, init, generator)
            lin.bias.zero_()
    return model
