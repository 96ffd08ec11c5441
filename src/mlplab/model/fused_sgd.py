"""torch.optim.SGD's update applied inside the engine's backward pass, so the gradient never goes through .grad.

Why: after the 8 matrix products of a step, the optimizer is the largest cost left. torch's SGD reads every
gradient and parameter once more and spends time per step in Python (hooks, group loops). For plain SGD
the update folds into the weight-gradient product itself: BLAS computes C = beta C + alpha A B, so
p <- (1 - lr wd) p - lr (dz^T h) is one addmm_ on the parameter, with no gradient tensor at all. With momentum
the buffer takes the product (buf <- mu buf + dz^T h) and the parameter one axpy.

Exactly the optimizer's semantics (PyTorch's SGD with dampening 0: weight decay added to the gradient, the
momentum buffer started as a copy of the first gradient, Nesterov's g + mu buf), up to float rounding; the
momentum buffers live in optimizer.state[p]["momentum_buffer"] as torch keeps them, so the optimizer's
state_dict, checkpoints and resuming are unchanged, and torch's own SGD.step could take over at any step.
p.grad is not written.
"""

from __future__ import annotations

import torch

from mlplab.errors import MlplabError


class FusedSGD:
    def __init__(self, optimizer: torch.optim.Optimizer):
        if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
            raise MlplabError("FusedSGD needs a torch.optim.SGD with one parameter group")
        group = optimizer.param_groups[0]
        if group.get("dampening", 0) != 0 or group.get("maximize", False):
            raise MlplabError("FusedSGD supports SGD without dampening and without maximize")
        self.optimizer = optimizer
        self._buffers: dict[torch.Tensor, torch.Tensor] = {}
        self.begin()

    def begin(self) -> None:
        """Read the group's settings; called once per step, since a schedule changes lr between steps."""
        group = self.optimizer.param_groups[0]
        self.lr = float(group["lr"])
        self.momentum = float(group["momentum"])
        self.nesterov = bool(group["nesterov"])
        self.weight_decay = float(group["weight_decay"])

    def update_weight(self, p: torch.Tensor, dz: torch.Tensor, h_in: torch.Tensor) -> None:
        """Step p (out, in) with the gradient dz^T h_in, dz (N, out) and h_in (N, in) from the backward."""
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        if not mu:
            # p - lr (G + wd p) = (1 - lr wd) p - lr G: one product, no gradient tensor
            p.addmm_(dz.t(), h_in, beta=1.0 - lr * wd, alpha=-lr)
            return
        state = self.optimizer.state[p]
        buf = state.get("momentum_buffer")
        if buf is not None and not self.nesterov:
            buf.addmm_(dz.t(), h_in, beta=mu)  # mu buf + G
            if wd:
                buf.add_(p, alpha=wd)           # + wd p: torch adds weight decay to the gradient first
            p.add_(buf, alpha=-lr)
            return
        # first momentum step, or Nesterov (which needs G itself): the gradient in a reused scratch tensor
        self._dense(p, torch.mm(dz.t(), h_in, out=self.scratch(p)), state)

    def update_bias(self, p: torch.Tensor, dz: torch.Tensor, k=None) -> None:
        """Step p (out,) with the gradient dz.sum(0); k: kernels.for_tensor(p) from the engine, or None."""
        state = self.optimizer.state[p] if self.momentum else None
        if k is not None and dz.is_contiguous():
            # one compiled pass (column sums in double, then the same update) instead of 2-6 small ops
            buf = state.get("momentum_buffer") if state is not None else None
            init = state is not None and buf is None
            if init:
                buf = state["momentum_buffer"] = torch.empty_like(p)
            n, c = dz.shape
            if k.bias_sgd(p.data_ptr(), buf.data_ptr() if buf is not None else None, dz.data_ptr(), n, c, self.lr,
                          self.momentum, self.weight_decay, int(self.nesterov), int(init)) == 0:
                return
            if init:
                del state["momentum_buffer"]  # out of memory in the kernel: nothing was written, do it below
        self._dense(p, torch.sum(dz, 0, out=self.scratch(p)), state)

    def _dense(self, p: torch.Tensor, g: torch.Tensor, state) -> None:
        # torch.optim.SGD's single-tensor update, step for step (g may be modified: it is scratch)
        if self.weight_decay:
            g.add_(p, alpha=self.weight_decay)
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.clone()
            else:
                buf.mul_(self.momentum).add_(g)
            if self.nesterov:
                g.add_(buf, alpha=self.momentum)
            else:
                g = buf
        p.add_(g, alpha=-self.lr)

    def scratch(self, p: torch.Tensor) -> torch.Tensor:
        # one gradient-sized buffer per parameter, allocated once (kept on the object, not in .grad)
        buf = self._buffers.get(p)
        if buf is None or buf.shape != p.shape or buf.device != p.device or buf.dtype != p.dtype:
            buf = self._buffers[p] = torch.empty_like(p)
        return buf
