"""Shared by the engine tests (imported as a module, like fuzz_targets): the SGD settings every fused or compiled
update is checked with, and the compiled kernels, which must have built wherever a C compiler exists."""

from __future__ import annotations

import shutil

import pytest

from mlplab.model import kernels

HAVE_CC = bool(shutil.which("cc") or shutil.which("gcc"))

SGD_SETTINGS = [
    dict(momentum=0.0, nesterov=False, weight_decay=0.0),
    dict(momentum=0.0, nesterov=False, weight_decay=1e-2),
    dict(momentum=0.9, nesterov=False, weight_decay=0.0),
    dict(momentum=0.9, nesterov=False, weight_decay=1e-2),
    dict(momentum=0.8, nesterov=True, weight_decay=0.0),
    dict(momentum=0.8, nesterov=True, weight_decay=1e-2),
]


def settings_id(settings: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in settings.items())


def loaded_kernels():
    """kernels.get(), or skip where no C compiler exists; where one does, a failed build fails the test instead
    of quietly testing the PyTorch path twice."""
    loaded = kernels.get()
    if loaded is None:
        if HAVE_CC:
            pytest.fail(f"a C compiler is installed but the kernels did not load: {kernels.status()}")
        pytest.skip("no C compiler: only the PyTorch path can be tested here")
    return loaded
