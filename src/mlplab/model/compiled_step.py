"""The whole training step in one compiled call, for the nets most runs train: kernels.c's mlplab_train_step.

It applies when (checked once per model, then a few cheap checks per step): the tensors are float32/float64 on
the CPU, the compiled kernels loaded and PyTorch exports its BLAS gemm (kernels.Kernels.gemm), every hidden layer
is relu or linear (dropout or not), the output is softmax with categorical cross-entropy on integer labels, and
the optimizer is SGD through FusedSGD. Otherwise engine.train_step runs the same step from Python, one op at a
time (the reference this path is tested against; tests/test_compiled_step.py).

What it computes is engine.train_step with FusedSGD, in the same order: the same products on the same BLAS, the
same mask keys drawn from the generator, the same kernels. Results agree with the Python path to float rounding
(the bias copy and SGD arithmetic are written out here rather than left to PyTorch's vectorised ops).
"""

from __future__ import annotations

import ctypes
import threading

import torch

from mlplab.model import kernels, masks
from mlplab.model.kernels import Kernels

RELU, DROPOUT = 1, 2  # the bits of kernels.c's acts[]
_ACT_CODES = {"relu": RELU, "linear": 0}
_CTYPES = {torch.float32: ctypes.c_float, torch.float64: ctypes.c_double}


class CompiledStep:
    """One model's static layout (sizes, activation codes, mask constants) and its reusable work buffers."""

    def __init__(self, model, k: Kernels, dtype: torch.dtype):
        self.k, self.dtype, self.plan = k, dtype, model.plan
        plan = model.plan
        self.n_layers = len(plan)
        hidden = plan[:-1]
        self.dims = (ctypes.c_int64 * (self.n_layers + 1))(model.input_dim, *(lin.out_features for lin, _, _ in plan))
        self.acts = (ctypes.c_int32 * max(1, len(hidden)))(
            *(_ACT_CODES[act] | (DROPOUT if rate > 0 else 0) for _, act, rate in hidden))
        constants = [masks.kernel_constants(rate) if rate > 0 else (0, 1.0) for _, _, rate in hidden]
        self.thresholds = (ctypes.c_int32 * max(1, len(hidden)))(*(t for t, _ in constants))
        self.scales = (_CTYPES[dtype] * max(1, len(hidden)))(*(s for _, s in constants))
        self.dropout_layers = [i for i, (_, _, rate) in enumerate(hidden) if rate > 0]
        self.keys = (ctypes.c_uint64 * max(1, len(hidden)))()
        self.ptrs = (ctypes.c_void_p * (7 * self.n_layers + 1))()
        self.capacity = 0
        self.buffers: list[torch.Tensor] = []
        self.stats = (ctypes.c_double * 2)()  # the step's (loss sum, correct count)
        self._lock = threading.Lock()

    @staticmethod
    def applies_to(model, dtype: torch.dtype) -> bool:
        plan = model.plan
        # dropout on the inputs is not part of the compiled step: the generic engine takes those models
        return (getattr(model, "input_rate", 0.0) == 0.0 and dtype in _CTYPES and plan[-1][1] == "softmax" and plan[-1][0].out_features > 1
                and all(act in _ACT_CODES for _, act, _ in plan[:-1])
                and model.input_dim <= _INT_MAX and all(lin.out_features <= _INT_MAX for lin, _, _ in plan))

    def _workspace(self, n: int) -> None:
        """z per layer (n x units), dh per layer after the first (n x its inputs), the output gradient (n x C)."""
        if n <= self.capacity:
            return
        dims = list(self.dims)
        z = [torch.empty(n, u, dtype=self.dtype) for u in dims[1:]]
        dh = [None] + [torch.empty(n, dims[i], dtype=self.dtype) for i in range(1, self.n_layers)]
        dz = torch.empty(n, dims[-1], dtype=self.dtype)
        self.buffers = z + [t for t in dh if t is not None] + [dz]  # kept alive while their pointers are used
        for i in range(self.n_layers):
            self.ptrs[7 * i + 5] = z[i].data_ptr()
            self.ptrs[7 * i + 6] = dh[i].data_ptr() if dh[i] is not None else None
        self.ptrs[7 * self.n_layers] = dz.data_ptr()
        self.capacity = n

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator, sgd):
        """(loss_sum, n_correct) as floats, or None when this batch needs the Python path (the caller runs it)."""
        # Raw pointers go to C: everything it touches must be a contiguous CPU tensor of the expected dtype and
        # shape, or the Python path (which checks and raises) runs instead.
        n = x.shape[0]
        if not (x.is_contiguous() and x.dtype == self.dtype and y.is_cpu and y.dtype == torch.int64
                and y.is_contiguous() and 0 < n <= _INT_MAX):
            return None
        with self._lock:  # one step at a time: the pointers, keys and work buffers are shared
            return self._step(x, y, n, generator, sgd)

    def _step(self, x, y, n, generator, sgd):
        ptrs, plan, dims = self.ptrs, self.plan, self.dims
        params = []
        for i, (lin, _, _) in enumerate(plan):
            w, b = lin._parameters["weight"], lin._parameters["bias"]  # not via nn.Module.__getattr__: per step
            if not (_fits(w, self.dtype, (dims[i + 1], dims[i])) and _fits(b, self.dtype, (dims[i + 1],))):
                return None
            ptrs[7 * i], ptrs[7 * i + 1] = w.data_ptr(), b.data_ptr()
            params += (w, b)
        mu, new_bufs = sgd.momentum, None
        if mu:
            state = sgd.optimizer.state
            bufs = [state[p].get("momentum_buffer") for p in params]
            if all(buf is None for buf in bufs):
                # torch's first momentum step: the buffers start as the gradient. They join the optimizer's state
                # only once the step succeeded, so an interruption cannot leave uninitialised ones behind.
                bufs = new_bufs = [torch.empty_like(p) for p in params]
            elif not all(buf is not None and _fits(buf, self.dtype, p.shape) for buf, p in zip(bufs, params)):
                return None  # partial or foreign buffers (another dtype after model.double()): the Python path
            for i in range(self.n_layers):
                ptrs[7 * i + 2], ptrs[7 * i + 3] = bufs[2 * i].data_ptr(), bufs[2 * i + 1].data_ptr()
                ptrs[7 * i + 4] = sgd.scratch(params[2 * i]).data_ptr()
        else:
            for i in range(self.n_layers):
                ptrs[7 * i + 2] = ptrs[7 * i + 3] = ptrs[7 * i + 4] = None
        self._workspace(n)
        if self.dropout_layers:
            for i, key in zip(self.dropout_layers, masks.draw_keys(len(self.dropout_layers), generator, x.device)):
                self.keys[i] = key % 2 ** 64
        k = self.k
        rc = k.train_step(k.gemm, self.n_layers, dims, self.acts, self.thresholds, self.scales, self.keys, ptrs,
                          x.data_ptr(), y.data_ptr(), n, sgd.lr, mu, sgd.weight_decay, int(sgd.nesterov),
                          int(new_bufs is not None), self.stats)
        if rc == -1:
            if new_bufs is not None:
                for p, buf in zip(params, new_bufs):
                    sgd.optimizer.state[p]["momentum_buffer"] = buf
            # written through pointers: tell autograd, as an in-place PyTorch op would
            torch.autograd.graph.increment_version(params)
            return self.stats[0], self.stats[1]
        if rc >= 0:
            raise kernels.label_out_of_range(int(y[rc]), dims[self.n_layers])
        raise MemoryError("out of memory in the compiled training step")


_INT_MAX = 2 ** 31 - 1  # BLAS's sizes are 32-bit ints (LP64)


def _fits(t: torch.Tensor, dtype: torch.dtype, shape) -> bool:
    return t.dtype == dtype and t.is_cpu and t.is_contiguous() and tuple(t.shape) == tuple(shape)


def for_model(model, sgd, k: Kernels | None, x: torch.Tensor) -> CompiledStep | None:
    """The model's compiled step (made once and kept on the FusedSGD, by model), or None where it does not
    apply."""
    if k is None or k.gemm is None:
        return None
    cache = sgd.compiled_steps
    entry = cache.get(id(model))
    if entry is None or entry[0] is not model.plan or entry[1] is not x.dtype:
        step = CompiledStep(model, k, x.dtype) if CompiledStep.applies_to(model, x.dtype) else None
        entry = cache[id(model)] = (model.plan, x.dtype, step)
    return entry[2]
