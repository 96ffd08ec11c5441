"""The whole training step in one compiled call, for the nets most runs train: kernels.c's mlplab_train_step (and
mlplab_train_step_bf16 for bf16 mixed precision: bf16 products with float32 accumulation, float32 everything else).

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

from mlplab.model import activations, kernels, masks
from mlplab.model.kernels import Kernels

_CTYPES = {torch.float32: ctypes.c_float, torch.float64: ctypes.c_double}


class CompiledStep:
    """One model's static layout (kernels.Step and its Layers: sizes, activation codes, mask constants) and its
    reusable work buffers."""

    def __init__(self, model, k: Kernels, dtype: torch.dtype, precision: str = "fp32"):
        self.k, self.dtype, self.plan, self.precision = k, dtype, model.plan, precision
        self.bf16 = precision == "bf16"
        self.call = k.train_step_bf16 if self.bf16 else k.train_step
        plan = model.plan
        self.n_layers = len(plan)
        self.dims = [model.input_dim, *(lin.out_features for lin, _, _ in plan)]
        self.linears = [lin for lin, _, _ in plan]
        self.shapes = [(torch.Size((u, d)), torch.Size((u,))) for d, u in zip(self.dims, self.dims[1:])]
        self.layers = (kernels.Layer * self.n_layers)()
        self.dropout_layers = []
        for i, (lin, act, rate) in enumerate(plan):
            layer = self.layers[i]
            layer.units = lin.out_features
            if i < self.n_layers - 1:
                layer.flags = activations.REGISTRY[act].compiled | (activations.COMPILED_DROPOUT if rate > 0 else 0)
                layer.threshold, layer.scale = masks.kernel_constants(rate) if rate > 0 else (0, 1.0)
                if rate > 0:
                    self.dropout_layers.append(i)
        # fused: the bf16 step's element-wise work runs in its products' epilogues (the same bits; tests turn it off
        # to compare)
        self.args = kernels.Step(gemm=k.gemm, layers=ctypes.cast(self.layers, ctypes.POINTER(kernels.Layer)),
                                 input_dim=model.input_dim, n_layers=self.n_layers, gemm_bf16=k.gemm_bf16, fused=1)
        # bf16: each layer's weights rounded into a buffer of their own, by the previous step's weight products
        # (reused while _rounded_stamp says nothing wrote the weights since) or at the start of the step
        self._rounded_stamp = None
        self.weights_bf16 = [torch.empty(lin.out_features, lin.in_features, dtype=torch.bfloat16)
                             for lin, _, _ in plan] if self.bf16 else []
        for layer, wb in zip(self.layers, self.weights_bf16):
            layer.weight_bf16 = wb.data_ptr()
        self.args_ref = ctypes.byref(self.args)
        self.capacity = 0
        self.buffers: list[torch.Tensor] = []
        self._lock = threading.Lock()

    @staticmethod
    def applies_to(model, dtype: torch.dtype, precision: str = "fp32", k: Kernels | None = None) -> bool:
        plan = model.plan
        if precision == "bf16" and not (dtype == torch.float32 and k is not None and k.train_step_bf16 is not None):
            return False
        # dropout on the inputs is not part of the compiled step: the generic engine takes those models
        return (getattr(model, "input_rate", 0.0) == 0.0 and dtype in _CTYPES and plan[-1][1] == "softmax"
                and plan[-1][0].out_features > 1
                and all(activations.REGISTRY[act].compiled is not None for _, act, _ in plan[:-1])
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
        for i, layer in enumerate(self.layers):
            layer.z = z[i].data_ptr()
            layer.dh = dh[i].data_ptr() if dh[i] is not None else None
        self.args.dz_out = dz.data_ptr()
        if self.bf16:  # the rounded inputs of the products: the batch, outputs, output gradients
            xb = torch.empty(n, dims[0], dtype=torch.bfloat16)
            zb = [torch.empty(n, u, dtype=torch.bfloat16) for u in dims[1:]]
            dzb = [torch.empty(n, u, dtype=torch.bfloat16) for u in dims[1:]]
            self.buffers += [xb, *zb, *dzb]
            self.args.x_bf16 = xb.data_ptr()
            for i, layer in enumerate(self.layers):
                layer.z_bf16, layer.dz_bf16 = zb[i].data_ptr(), dzb[i].data_ptr()
        self.capacity = n

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator, sgd, weights_untouched: bool = False):
        """(loss_sum, n_correct) as floats, or None when this batch needs the Python path (the caller runs it).
        weights_untouched: engine.train_step's promise (the bf16 step may reuse its rounded weights)."""
        # Raw pointers go to C: everything it touches must be a contiguous CPU tensor of the expected dtype and
        # shape, or the Python path (which checks and raises) runs instead.
        n = x.shape[0]
        if not (x.is_contiguous() and x.dtype == self.dtype and y.is_cpu and y.dtype == torch.int64
                and y.is_contiguous() and 0 < n <= _INT_MAX):
            return None
        with self._lock:  # one step at a time: the pointers, keys and work buffers are shared
            return self._step(x, y, n, generator, sgd, weights_untouched)

    def _step(self, x, y, n, generator, sgd, weights_untouched):
        layers, args, dtype = self.layers, self.args, self.dtype
        params, stamp = [], []
        for layer, lin, (w_shape, b_shape) in zip(layers, self.linears, self.shapes):
            w, b = lin._parameters["weight"], lin._parameters["bias"]  # not via nn.Module.__getattr__: per step
            if not (_fits(w, dtype, w_shape) and _fits(b, dtype, b_shape)):
                return None
            layer.weight = w_ptr = w.data_ptr()
            layer.bias = b.data_ptr()
            params += (w, b)
            stamp.append((w_ptr, w._version))
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
            for i, layer in enumerate(layers):
                layer.weight_momentum, layer.bias_momentum = bufs[2 * i].data_ptr(), bufs[2 * i + 1].data_ptr()
                layer.scratch = sgd.scratch(params[2 * i]).data_ptr()
        else:
            for layer in layers:
                layer.weight_momentum = layer.bias_momentum = layer.scratch = None
        self._workspace(n)
        if self.dropout_layers:
            for i, key in zip(self.dropout_layers, masks.draw_keys(len(self.dropout_layers), generator, x.device)):
                layers[i].key = key % 2 ** 64
        args.x, args.y, args.n = x.data_ptr(), y.data_ptr(), n
        args.lr, args.momentum, args.weight_decay = sgd.lr, mu, sgd.weight_decay
        args.nesterov, args.init = int(sgd.nesterov), int(new_bufs is not None)
        if self.bf16:
            self.k.set_gemm_threads(torch.get_num_threads())  # PyTorch's setting, which may change between steps
            # The rounded weights are current when the last step left them so and, since then, the caller saw no
            # write and PyTorch counted none (each weight the same memory at the same version).
            args.weights_rounded = int(weights_untouched and self._rounded_stamp == stamp)
        rc = self.call(self.args_ref)
        if rc == -1:
            if new_bufs is not None:
                for p, buf in zip(params, new_bufs):
                    sgd.optimizer.state[p]["momentum_buffer"] = buf
            # written through pointers: tell autograd, as an in-place PyTorch op would
            torch.autograd.graph.increment_version(params)
            if self.bf16:
                self._rounded_stamp = [(ptr, w._version) for (ptr, _), w in zip(stamp, params[::2])] \
                    if args.weights_rounded else None
            return args.stats[0], args.stats[1]
        if rc >= 0:
            raise kernels.label_out_of_range(int(y[rc]), self.dims[self.n_layers])
        raise MemoryError("out of memory in the compiled training step")


_INT_MAX = 2 ** 31 - 1  # BLAS's sizes are 32-bit ints (LP64)


def _fits(t: torch.Tensor, dtype: torch.dtype, shape: torch.Size) -> bool:
    return t.dtype == dtype and t.is_cpu and t.is_contiguous() and t.shape == shape


def for_model(model, sgd, k: Kernels | None, dtype: torch.dtype, precision: str = "fp32") -> CompiledStep | None:
    """A compiled step for the model (a new one), or None where it does not apply; engine.choose_route is what
    picks it for training and keeps it."""
    if k is None or k.gemm is None or sgd is None or not CompiledStep.applies_to(model, dtype, precision, k):
        return None
    return CompiledStep(model, k, dtype, precision)
