"""Shared fixtures."""

from __future__ import annotations

import pytest
from engine_support import loaded_kernels

from mlplab.model import kernels


@pytest.fixture(params=["compiled", "pytorch"])
def engine_path(request, monkeypatch):
    """Run a test on both element-wise paths of the engine: the compiled kernels and the PyTorch fallback.

    Where a C compiler exists, the kernels must build: a build failure fails the test instead of quietly
    testing the fallback twice.
    """
    if request.param == "pytorch":
        monkeypatch.setattr(kernels, "for_tensor", lambda t: None)
    else:
        loaded_kernels()
    return request.param
