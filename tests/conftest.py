"""Shared fixtures."""

from __future__ import annotations

import shutil

import pytest

from mlplab.model import kernels


@pytest.fixture(params=["compiled", "pytorch"])
def engine_path(request, monkeypatch):
    """Run a test on both element-wise paths of the engine: the compiled kernels and the PyTorch fallback.

    Where a C compiler exists, the kernels must build: a build failure fails the test instead of quietly
    testing the fallback twice.
    """
    if request.param == "pytorch":
        monkeypatch.setattr(kernels, "for_tensor", lambda t: None)
    elif kernels.get() is None:
        if shutil.which("cc") or shutil.which("gcc"):
            pytest.fail(f"a C compiler is installed but the kernels did not load: {kernels.status()}")
        pytest.skip("no C compiler: only the PyTorch path can be tested here")
    return request.param
