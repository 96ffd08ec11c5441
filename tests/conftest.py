"""Shared fixtures."""

from __future__ import annotations

import pytest
from engine_support import loaded_kernels

from mlplab.model import engine


@pytest.fixture(params=["compiled", "pytorch"])
def engine_path(request):
    """Run a test on both element-wise paths of the engine: the compiled kernels and the PyTorch fallback
    (engine.use_route: the public route setting).

    Where a C compiler exists, the kernels must build: a build failure fails the test instead of quietly
    testing the fallback twice.
    """
    if request.param == "compiled":
        loaded_kernels()
    with engine.use_route("auto" if request.param == "compiled" else "torch-ops"):
        yield request.param
