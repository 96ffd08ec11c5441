"""The training engine: closed-form forward + backward for the whole MLP, without an autograd graph.

Why: for the notebook's net at batch 128 the 8 matrix products are most of the work, and autograd's per-op
bookkeeping (graph nodes, saved tensors, dropout's extra mask tensors, the generic cross-entropy backward) costs a
large fraction on top. Here each step is: addmm per layer, the activation in place, dropout applied in place from a
counter-based mask (model/masks.py: generated in the forward, regenerated in the backward, never stored; compiled
element-wise kernels on the CPU, model/kernels.py), the loss gradient in closed form ((softmax(z) - y) / N for
softmax + cross-entropy, (sigmoid(z) - y) / (N C) for sigmoid + binary cross-entropy), then the backward products
written straight into each parameter's .grad, so any torch.optim optimizer can step them. On the CPU, with a
FusedSGD and a net of relu/linear hidden layers, softmax and cross-entropy on integer labels, the same step runs
as one compiled call instead (model/compiled_step.py; tests/test_compiled_step.py checks it against this code).

Contract (docs/INTERNALS.md):
- train_step(model, x, y, loss, generator=None) -> (loss_sum, n_correct): 0-d tensors on the model's device, or
  Python floats where the compiled CPU kernel computed them (float() reads both); no host sync inside (nothing
  calls .item()), so it runs unchanged on CUDA tensors. p.grad is *overwritten* with the gradient of the mean loss
  over the batch (no zero_grad needed; existing .grad storage is reused, which avoids an allocation per step). An
  empty batch is an MlplabError.
- Dropout is always on in train_step (it is a training step). Each step draws one 64-bit key per dropout layer
  with a rate > 0 from `generator` (torch's default RNG when None; one random_ call for all layers, in layer
  order); a layer's mask is masks.mask_from_key(output, rate, key). The keep probability is 1 - rate rounded to a
  multiple of 1/65536 (keep_probability), and kept units are scaled by its inverse.
- y: int64 (N,) class labels, or float (N, C) targets (one-hot or soft). With binary_crossentropy and a single
  output unit, int labels are the 0/1 targets.
- Losses follow Keras: categorical_crossentropy = -sum_c y_c log p_c per sample; binary_crossentropy and mse are
  averaged over the C outputs per sample. Fused, exact forms are used for softmax + categorical_crossentropy and
  sigmoid + binary_crossentropy; other pairings use Keras's probability-space definitions (outputs normalised and
  clipped to [1e-7, 1 - 1e-7]) with their closed-form gradients, then the output activation's backward.
- n_correct counts argmax(output) == label per sample; for binary_crossentropy with float targets or one output unit
  it is Keras's binary accuracy (threshold 0.5) averaged over the outputs, so it can be fractional.

Routes: which implementation runs a model's steps (the whole step in C, C kernels between PyTorch ops, PyTorch ops;
with precision bf16 the compiled bf16 step or autograd under torch.autocast) is chosen once per (model, device,
dtype, optimizer, loss, precision) by choose_route, named in run manifests; set_route/use_route caps it (tests
run every route through it).

reference_step() computes the same with plain autograd (the same keys from the generator, the same masks)
and is what the tests compare against.
"""

from __future__ import annotations

import ctypes
import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from mlplab.errors import MlplabError
from mlplab.model import activations, compiled_step, kernels, masks
from mlplab.model.masks import draw_mask, keep_probability  # noqa: F401  (the engine's public API)
from mlplab.model.mlp import MLP, activate

LOSSES = ("categorical_crossentropy", "binary_crossentropy", "mse")
EPSILON = 1e-7  # Keras's backend epsilon: the clip for probability-space losses

# --- the route: which implementation runs a model's steps, chosen once per (model, device, dtype, optimizer) ------
ROUTES = ("c-step", "c-kernels", "torch-ops")  # fastest first
BF16_ROUTES = ("c-step-bf16", "autocast-bf16")  # what the first and the other two become with precision bf16
ROUTE_DESCRIPTIONS = {
    "c-step": "the whole step in one compiled call (model/compiled_step.py)",
    "c-kernels": "PyTorch ops with the compiled element-wise kernels between them (model/kernels.py)",
    "torch-ops": "PyTorch ops only",
    "c-step-bf16": "the whole step in one compiled call, bf16 products with float32 accumulation",
    "autocast-bf16": "torch.autograd under torch.autocast(bfloat16), float32 master weights and optimizer",
}
ROUTE_SETTINGS = ("auto", *ROUTES)
_route_setting = "auto"


@dataclass(frozen=True)
class Route:
    """A chosen route: its name (recorded in run manifests), the compiled kernels it uses (None: PyTorch ops) and
    the compiled whole step (None: the step runs op by op from Python)."""
    name: str
    kernels: "kernels.Kernels | None"
    step: "compiled_step.CompiledStep | None"


def set_route(name: str) -> str:
    """Set the fastest route the engine may take ("auto": the fastest that applies); returns the previous setting.

    A route that does not apply to a model (the whole step for a tanh net, compiled kernels on a GPU) falls to
    the next one down. Tests use this to run the same step on each route."""
    global _route_setting
    if name not in ROUTE_SETTINGS:
        raise MlplabError(f"unknown engine route {name!r}; allowed: {', '.join(ROUTE_SETTINGS)}")
    previous, _route_setting = _route_setting, name
    return previous


def route_setting() -> str:
    return _route_setting


@contextmanager
def use_route(name: str):
    """set_route for the duration of a with block."""
    previous = set_route(name)
    try:
        yield
    finally:
        set_route(previous)


def choose_route(model: MLP, device, dtype: torch.dtype, sgd=None, loss: str = "categorical_crossentropy",
                 precision: str = "fp32") -> Route:
    """The route train_step takes for this model, device, dtype, optimizer (a FusedSGD or None), loss and
    precision ("fp32" or "bf16", model/precision.py): the fastest the setting allows that applies. Chosen once
    and kept (with the compiled step's work buffers); builds the compiled kernels on first use."""
    device = torch.device(device)
    key = (dtype, device, sgd is not None, loss, _route_setting, precision)
    by_key = _routes.get(model)
    if by_key is None:
        by_key = _routes[model] = {}
    route = by_key.get(key)
    if route is None:
        route = by_key[key] = _new_route(model, device, dtype, sgd, loss, _route_setting, precision)
    return route


# model -> {(dtype, device, optimizer kind, loss, setting): Route}; weak, so a model's routes (and the compiled
# step's work buffers) go with it, and a copy of a model (deepcopy) gets routes of its own
_routes: "weakref.WeakKeyDictionary[MLP, dict]" = weakref.WeakKeyDictionary()


def _new_route(model, device, dtype, sgd, loss, setting, precision) -> Route:
    if precision not in ("fp32", "bf16"):
        raise MlplabError(f"unknown precision {precision!r}; allowed: fp32, bf16")
    k = None
    if setting != "torch-ops" and device.type == "cpu":
        loaded = kernels.get()
        k = loaded.get(dtype) if loaded is not None else None
    step = None
    if setting in ("auto", "c-step") and loss == "categorical_crossentropy":
        step = compiled_step.for_model(model, sgd, k, dtype, precision)
    if precision == "bf16":
        return Route("c-step-bf16", k, step) if step is not None else Route("autocast-bf16", None, None)
    return Route("c-step" if step is not None else "c-kernels" if k is not None else "torch-ops", k, step)


def _cached_route(model: MLP, x: torch.Tensor, sgd, loss: str, precision: str) -> Route:
    # choose_route's lookup without its argument handling: this runs every step
    by_key = _routes.get(model)
    key = (x.dtype, x.device, sgd is not None, loss, _route_setting, precision)
    route = by_key.get(key) if by_key is not None else None
    return route if route is not None else choose_route(model, x.device, x.dtype, sgd, loss, precision)


# --- shared pieces -----------------------------------------------------------------------------------------------
def _check(model: MLP, x: torch.Tensor, y: torch.Tensor, loss: str) -> None:
    # Shape checks only: they read Python ints, never tensor values, so they cost no host sync.
    if loss not in LOSSES:
        raise MlplabError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
    if x.ndim != 2 or x.shape[1] != model.input_dim:
        raise MlplabError(f"the model takes inputs of shape (N, {model.input_dim}), got {tuple(x.shape)}")
    if y.shape[0] != x.shape[0]:
        raise MlplabError(f"{x.shape[0]} inputs but {y.shape[0]} targets")
    if y.is_floating_point():
        if y.ndim != 2 or y.shape[1] != model.n_outputs:
            raise MlplabError(f"float targets must have shape (N, {model.n_outputs}), got {tuple(y.shape)}")
    elif y.ndim != 1:
        raise MlplabError(f"integer labels must have shape (N,), got {tuple(y.shape)}")


def _dense_targets(y: torch.Tensor, n_out: int, dtype: torch.dtype) -> torch.Tensor:
    """Float (N, C) targets from labels or targets (int labels: one-hot; with one output: the 0/1 label itself)."""
    if y.is_floating_point():
        return y.to(dtype)
    if n_out == 1:
        return y.to(dtype).unsqueeze(1)  # (N, 1)
    t = torch.zeros(y.shape[0], n_out, dtype=dtype, device=y.device)  # (N, C)
    return t.scatter_(1, y.unsqueeze(1), 1.0)


def _n_correct(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Correct predictions in the batch as a 0-d float tensor (fractional for binary accuracy)."""
    n_out = out.shape[1]
    if loss == "binary_crossentropy" and (y.is_floating_point() or n_out == 1):
        # Keras's binary_accuracy on probabilities: threshold 0.5, averaged over the outputs of each sample
        t = _dense_targets(y, n_out, out.dtype)  # (N, C)
        return ((out > 0.5) == (t > 0.5)).sum().to(out.dtype) / n_out
    if n_out == 1:
        pred = out[:, 0] > 0.5  # (N,) one output unit: a 0/1 prediction
        truth = (y[:, 0] > 0.5) if y.is_floating_point() else (y != 0)
        return (pred == truth).sum().to(out.dtype)
    labels = y.argmax(1) if y.is_floating_point() else y  # (N,)
    return (out.argmax(1) == labels).sum().to(out.dtype)


# --- activations: the closed forms come from the activation table (model/activations.py) ------------------------
def _act_backward(g: torch.Tensor, act: str, a: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """dL/dz from g = dL/da, where a = act(z). May modify g in place."""
    return activations.get(act).backward(g, a, z)


def _act_forward_(z: torch.Tensor, act: str) -> torch.Tensor:
    """Activation applied in place where the backward can be computed from the output alone."""
    return activations.get(act).forward_(z)


# --- the loss: value and dL/dz of the output layer -----------------------------------------------------------------
def _output_loss(z: torch.Tensor, y: torch.Tensor, loss: str, act: str, need_grad: bool):
    """(loss_sum, out, dz) for the output pre-activation z (N, C); dz is the gradient of the *mean* loss."""
    n, c = z.shape
    if loss == "categorical_crossentropy" and act == "softmax":
        logp = torch.log_softmax(z, 1)  # (N, C)
        out = logp.exp()                # (N, C) probabilities
        if y.is_floating_point():
            loss_sum = -(y * logp).sum()
            # d/dz of -sum_c y_c log softmax(z)_c = p * sum_c y_c - y  (exact for soft targets too)
            dz = out * y.sum(1, keepdim=True) - y if need_grad else None  # (N, C)
        else:
            loss_sum = -logp.gather(1, y.unsqueeze(1)).sum()
            dz = out.clone().scatter_add_(1, y.unsqueeze(1), out.new_full((n, 1), -1.0)) if need_grad else None
        return loss_sum, out, (dz.mul_(1.0 / n) if need_grad else None)
    t = _dense_targets(y, c, z.dtype)  # (N, C)
    if loss == "binary_crossentropy" and act == "sigmoid":
        # log(1 + exp(z)) - t z, the stable form of -(t log s + (1 - t) log(1 - s))
        loss_sum = (F.softplus(z, threshold=1e9) - t * z).sum() / c
        out = torch.sigmoid(z)
        return loss_sum, out, ((out - t).mul_(1.0 / (n * c)) if need_grad else None)
    out = _act_forward_(z, act)  # (N, C); z stays intact where the backward needs it (gelu)
    if loss == "mse":
        diff = out - t  # (N, C)
        loss_sum = diff.square().sum() / c
        g = diff.mul_(2.0 / (n * c)) if need_grad else None
    elif loss == "binary_crossentropy":
        oc = out.clamp(EPSILON, 1 - EPSILON)  # (N, C)
        loss_sum = -(t * oc.log() + (1 - t) * torch.log1p(-oc)).sum() / c
        if need_grad:
            inside = (out >= EPSILON) & (out <= 1 - EPSILON)  # clamp passes the gradient only inside the range
            g = ((1 - t) / (1 - oc) - t / oc).mul_(inside).mul_(1.0 / (n * c))
    else:  # categorical_crossentropy on a non-softmax output: Keras normalises, clips, then takes the log
        s = out.sum(1, keepdim=True)  # (N, 1)
        q = out / s                   # (N, C)
        qc = q.clamp(EPSILON, 1 - EPSILON)
        loss_sum = -(t * qc.log()).sum()
        if need_grad:
            gq = (-t / qc).mul_((q >= EPSILON) & (q <= 1 - EPSILON))  # dL/dq
            g = (gq - (gq * q).sum(1, keepdim=True)).div_(s).mul_(1.0 / n)  # through q = out / sum(out)
    dz = _act_backward(g, act, out, z) if need_grad else None
    return loss_sum, out, dz


def _training_loss(z: torch.Tensor, y: torch.Tensor, loss: str, act: str, k):
    """(loss_sum, n_correct, dz) for train_step: the compiled kernel for softmax + cross-entropy on integer labels
    (one pass instead of ~15 small ops; Python floats), else the PyTorch forms (0-d tensors)."""
    if (k is not None and loss == "categorical_crossentropy" and act == "softmax" and z.shape[1] > 1
            and y.dtype == torch.int64 and y.is_cpu and y.is_contiguous()):
        n, c = z.shape
        dz = torch.empty_like(z)
        stats = (ctypes.c_double * 2)()  # (loss sum, correct count); per call: ctypes lets other threads run
        bad = k.softmax_xent(z.data_ptr(), y.data_ptr(), dz.data_ptr(), n, c, 1.0 / n, stats)
        if bad >= 0:
            raise kernels.label_out_of_range(int(y[bad]), c)
        return stats[0], stats[1], dz
    loss_sum, out, dz = _output_loss(z, y, loss, act, need_grad=True)
    return loss_sum, _n_correct(out, y, loss), dz


# --- the hot path ----------------------------------------------------------------------------------------------------
def train_step(model: MLP, x: torch.Tensor, y: torch.Tensor, loss: str,
               generator: torch.Generator | None = None, sgd=None, precision: str = "fp32",
               weights_untouched: bool = False):
    """One closed-form forward + backward on a batch; returns (loss_sum, n_correct) (see the module's contract).

    Writes p.grad, or with `sgd` (a FusedSGD) applies that optimizer's update to the parameters during the
    backward instead (p.grad untouched; see fused_sgd.py). precision "bf16": bf16 products with float32
    accumulation, float32 master weights (the compiled bf16 step, else autograd under torch.autocast, which
    steps `sgd`'s optimizer itself).

    weights_untouched: the caller vouches that nothing wrote the model's weights since its previous train_step
    (the Trainer does within an epoch when no callback runs code between batches). The compiled bf16 step then
    reuses the weights it rounded to bf16 at the end of that step instead of rounding them again; PyTorch's
    version counters are checked as well, so only writes that bypass them (.data, NumPy views) need the promise.
    """
    _check(model, x, y, loss)
    if x.shape[0] == 0:
        raise MlplabError("cannot take a training step on an empty batch")
    if sgd is not None:
        sgd.begin()
    # Per-step Python work is a visible share of a step at batch 128 (~50 us of ~3 ms), so the loops below read
    # each parameter once and resolve the compiled kernels once.
    route = _cached_route(model, x, sgd, loss, precision)
    k = route.kernels
    if route.step is not None:  # the whole step in one compiled call
        result = route.step(x, y, generator, sgd, weights_untouched)
        if result is not None:
            return result
    if precision == "bf16":
        loss_sum, n_correct = reference_step(model, x, y, loss, generator, autocast=True)
        if sgd is not None:
            sgd.optimizer.step()
        return loss_sum, n_correct
    plan = model.plan
    last = len(plan) - 1
    keys = iter(masks.draw_keys(model.n_dropout, generator, x.device)) if model.n_dropout else None
    grad_was_enabled = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # what torch.no_grad() does, for less per-step overhead
    try:
        params = []  # per layer: (weight, bias)
        saved = []  # per hidden layer: (output after dropout, activation, pre-activation or None, mask key or None)
        if model.input_rate > 0.0:
            # dropout on the inputs: a new tensor (the batch is the caller's); no gradient flows to the inputs
            x = masks.dropout(x, model.input_rate, next(keys), k)  # (N, D)
        h = x  # (N, D)
        for i, (lin, act, rate) in enumerate(plan):
            # the Linear's own parameter table (its attribute access goes through nn.Module.__getattr__)
            w, b = lin._parameters["weight"], lin._parameters["bias"]
            params.append((w, b))
            z = F.linear(h, w, b)  # (N, units): addmm(b, h, w^T)
            if i == last:
                break
            zk = z if activations.REGISTRY[act].needs == "input" else None
            key = next(keys) if rate > 0.0 else None
            if key is not None and act == "relu":
                # relu's backward reads only the sign of its output, and the masked output is positive exactly
                # where the unit was active and kept: the mask goes on in place and is never stored
                a = h_next = masks.relu_dropout_(z, rate, key, k)  # (N, units)
            else:
                a = _act_forward_(z, act)  # (N, units), in place when the backward needs only the output
                # others keep the unmasked activation for their backward
                h_next = masks.dropout(a, rate, key, k) if key is not None else a  # (N, units)
            saved.append((h_next, a, zk, key))
            h = h_next
        loss_sum, n_correct, dz = _training_loss(z, y, loss, plan[last][1], k)
        for i in range(last, -1, -1):
            w, b = params[i]
            h_in = x if i == 0 else saved[i - 1][0]  # (N, in): this layer's input
            # (N, in): gradient w.r.t. the previous layer's (dropped-out) output, taken before a fused update
            # changes the weight
            dh = torch.mm(dz, w) if i > 0 else None
            if sgd is None:
                _write_grad(w, torch.mm, dz.t(), h_in)  # (out, in)
                _write_sum(b, dz)                        # (out,)
            else:
                sgd.update_weight(w, dz, h_in)
                sgd.update_bias(b, dz, k)
            if i == 0:
                break
            _, prev_act, prev_rate = plan[i - 1]
            _, a, zk, key = saved[i - 1]
            if prev_act == "relu":
                # with dropout, a holds relu(z) * mask: dz = dh * (a > 0) / keep, with no mask tensor
                dz = masks.relu_backward_(dh, a, masks.kernel_constants(prev_rate)[1] if key is not None else 1.0, k)
            else:
                if key is not None:
                    masks.dropout_backward_(dh, prev_rate, key, k)
                dz = _act_backward(dh, prev_act, a, zk)
    finally:
        torch.set_grad_enabled(grad_was_enabled)
    return loss_sum, n_correct


def _write_grad(p: torch.Tensor, op, a: torch.Tensor, b: torch.Tensor) -> None:
    # Reuse p.grad's storage when it has the right shape: no allocation, no zeroing.
    if p.grad is None or p.grad.shape != p.shape:
        p.grad = op(a, b)
    else:
        op(a, b, out=p.grad)


def _write_sum(p: torch.Tensor, dz: torch.Tensor) -> None:
    if p.grad is None or p.grad.shape != p.shape:
        p.grad = dz.sum(0)
    else:
        torch.sum(dz, 0, out=p.grad)


# --- inference ----------------------------------------------------------------------------------------------------
def _batches(x, batch_size: int, device, dtype):
    t = torch.as_tensor(x)
    for s in range(0, t.shape[0], batch_size):
        yield s, t[s:s + batch_size].to(device=device, dtype=dtype, non_blocking=True)


def _forward_logits(model: MLP, xb: torch.Tensor) -> torch.Tensor:
    h = xb  # (B, D)
    plan = model.plan
    for i, (lin, act, _) in enumerate(plan):
        z = torch.addmm(lin.bias, h, lin.weight.t())  # (B, units)
        if i == len(plan) - 1:
            return z
        h = _act_forward_(z, act)  # dropout is the identity at inference
    return h


def predict_proba(model: MLP, x, batch_size: int = 4096) -> torch.Tensor:
    """Outputs after the output activation (probabilities for softmax), batched, inference mode; (N, C)."""
    p = model.plan[0][0].weight
    t = torch.as_tensor(x)
    if t.ndim != 2 or t.shape[1] != model.input_dim:
        raise MlplabError(f"the model takes inputs of shape (N, {model.input_dim}), got {tuple(t.shape)}")
    act = model.output_activation
    outs = []
    with torch.inference_mode():
        for _, xb in _batches(t, batch_size, p.device, p.dtype):
            outs.append(_act_forward_(_forward_logits(model, xb), act))  # (B, C)
        if not outs:
            return torch.empty(0, model.n_outputs, dtype=p.dtype, device=p.device)
        return torch.cat(outs)


def evaluate(model: MLP, x, y, loss: str, batch_size: int = 4096) -> tuple[float, float]:
    """(mean loss, accuracy) over all of x, y, batched, inference mode; one host sync at the end."""
    p = model.plan[0][0].weight
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    _check(model, xt, yt, loss)
    n = xt.shape[0]
    if n == 0:
        raise MlplabError("cannot evaluate on 0 samples")
    act = model.output_activation
    with torch.inference_mode():
        loss_total = torch.zeros((), dtype=torch.float64, device=p.device)
        correct = torch.zeros((), dtype=torch.float64, device=p.device)
        for s, xb in _batches(xt, batch_size, p.device, p.dtype):
            yb = yt[s:s + batch_size].to(p.device, non_blocking=True)
            if yb.is_floating_point():
                yb = yb.to(p.dtype)
            loss_sum, out, _ = _output_loss(_forward_logits(model, xb), yb, loss, act, need_grad=False)
            loss_total += loss_sum
            correct += _n_correct(out, yb, loss)
        return float(loss_total) / n, float(correct) / n


# --- the reference: plain autograd ---------------------------------------------------------------------------------
def reference_loss(out_or_logits: torch.Tensor, y: torch.Tensor, loss: str, act: str) -> torch.Tensor:
    """Summed loss over the batch from autograd-friendly torch ops (the definitions the engine must match).

    For softmax + categorical_crossentropy and sigmoid + binary_crossentropy, pass the logits; otherwise the
    activated outputs.
    """
    c = out_or_logits.shape[1]
    if loss == "categorical_crossentropy" and act == "softmax":
        logp = torch.log_softmax(out_or_logits, 1)
        if y.is_floating_point():
            return -(y * logp).sum()
        return F.nll_loss(logp, y, reduction="sum")
    t = _dense_targets(y, c, out_or_logits.dtype)
    if loss == "binary_crossentropy" and act == "sigmoid":
        return F.binary_cross_entropy_with_logits(out_or_logits, t, reduction="sum") / c
    out = out_or_logits
    if loss == "mse":
        return F.mse_loss(out, t, reduction="sum") / c
    if loss == "binary_crossentropy":
        oc = out.clamp(EPSILON, 1 - EPSILON)
        return -(t * oc.log() + (1 - t) * torch.log1p(-oc)).sum() / c
    q = out / out.sum(1, keepdim=True)
    return -(t * q.clamp(EPSILON, 1 - EPSILON).log()).sum()


def reference_step(model: MLP, x: torch.Tensor, y: torch.Tensor, loss: str,
                   generator: torch.Generator | None = None,
                   autocast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """train_step computed by torch.autograd: same masks (same generator draws), p.grad overwritten.

    autocast: the forward under torch.autocast(bfloat16) (the hidden layers run in bf16, as PyTorch's mixed
    precision does); the loss, softmax and gradients of the float32 parameters are float32."""
    _check(model, x, y, loss)
    plan = model.plan
    keys = iter(masks.draw_keys(model.n_dropout, generator, x.device)) if model.n_dropout else None
    h = x
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        if model.input_rate > 0.0:
            h = x * masks.mask_from_key(x, model.input_rate, next(keys))
        for i, (lin, act, rate) in enumerate(plan):
            z = F.linear(h, lin.weight, lin.bias)  # (N, units)
            if i == len(plan) - 1:
                break
            a = activate(z, act)
            if rate > 0.0:
                with torch.no_grad():
                    mask = masks.mask_from_key(a, rate, next(keys))
                a = a * mask
            h = a
    if autocast:
        z = z.float()  # (N, C): the loss and the output activation in float32
    act = plan[-1][1]
    fused = (loss, act) in (("categorical_crossentropy", "softmax"), ("binary_crossentropy", "sigmoid"))
    out = activate(z, act)
    loss_sum = reference_loss(z if fused else out, y, loss, act)
    for p in model.parameters():
        p.grad = None
    (loss_sum / x.shape[0]).backward()
    with torch.no_grad():
        n_correct = _n_correct(out, y, loss)
    return loss_sum.detach(), n_correct
