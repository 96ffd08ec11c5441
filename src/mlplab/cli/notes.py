"""One-line notes the CLI prints to stderr before long work."""

from __future__ import annotations

import click

from mlplab.errors import MlplabError


def note_cpu_kernels(device) -> None:
    """Say, before training on the CPU, when the engine's compiled kernels could not be built (no C compiler, an
    unwritable cache): training still works, on PyTorch ops, but slower. Silent when they were switched off
    on purpose (MLPLAB_KERNELS=0) or when training runs on a GPU."""
    from mlplab.model import kernels
    from mlplab.train.trainer import resolve_device

    try:
        on_cpu = resolve_device(device).type == "cpu"
    except MlplabError:
        return  # a bad --device is reported by the training code, with the allowed values
    failure = kernels.failure() if on_cpu else None
    if failure is not None and not isinstance(failure, kernels.KernelsOff):
        click.echo(f"mlplab: note: training uses the slower {kernels.status()}", err=True)
