"""Optimizers and learning-rate schedules, resolved from names through one registry each."""

from __future__ import annotations

import math

import torch

from mlplab.errors import MlplabError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "onecycle")


def make_optimizer(name: str, params, *, lr: float, momentum: float = 0.0, nesterov: bool = False,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    from mlplab.train.options import check_settings

    check_settings("optimizer settings", optimizer=name, lr=lr, momentum=momentum, nesterov=nesterov,
                   weight_decay=weight_decay)
    params = list(params)
    # foreach=True: one fused multi-tensor kernel per step instead of a Python loop over parameters
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                               foreach=True)
    if name == "adam":
        # eps=1e-7 and betas as in Keras, so recipes carry over
        return torch.optim.Adam(params, lr=lr, eps=1e-7, weight_decay=weight_decay, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, eps=1e-7, weight_decay=weight_decay, foreach=True)
    # Keras's RMSprop: rho=0.9 (torch's alpha defaults to 0.99), eps=1e-7
    return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, momentum=momentum, weight_decay=weight_decay,
                               foreach=True)


def make_schedule(name: str, base_lr: float, *, steps_per_epoch: int, epochs: int, step_size: int = 10,
                  gamma: float = 0.5, warmup: float = 0.3):
    """Return lr(step) for a global step counted from 0 over the whole run.

    The schedule is a pure function of the step, so a resumed run gets exactly the learning rates of an
    uninterrupted one without saving any scheduler state.
    """
    if name not in SCHEDULES:
        raise MlplabError(f"unknown LR schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    total = max(1, steps_per_epoch * epochs)
    if name == "constant":
        return lambda step: base_lr
    if name == "step":
        if step_size < 1 or not (0 < gamma <= 1):
            raise MlplabError("step schedule needs step_size >= 1 epoch and 0 < gamma <= 1")
        return lambda step: base_lr * gamma ** ((step // steps_per_epoch) // step_size)
    if name == "cosine":
        # decays per step from base_lr to 0 at the last step
        return lambda step: 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total) / total))
    # onecycle (Smith 2018, as torch's OneCycleLR with cosine annealing): warm up from lr/25, down to lr/1e4
    start, end = base_lr / 25.0, base_lr / 1e4
    warm = max(1, int(warmup * total))

    def onecycle(step: int) -> float:
        if step < warm:
            return start + (base_lr - start) * 0.5 * (1 - math.cos(math.pi * step / warm))
        t = min(1.0, (step - warm) / max(1, total - warm))
        return end + (base_lr - end) * 0.5 * (1 + math.cos(math.pi * t))

    return onecycle
