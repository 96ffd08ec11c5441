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


@pytest.fixture(scope="session")
def fashion_best_fp32(tmp_path_factory):
    """experiments/fashion-best.toml trained once in fp32 on real Fashion-MNIST (about 2 minutes on 2 cores):
    the accuracy test checks it and the bf16 test compares against it, so the suite pays for it once."""
    from pathlib import Path

    from mlplab.runs.config import load_train_config
    from mlplab.runs.session import train_run

    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist package is not installed")
    opts = load_train_config(Path(__file__).resolve().parents[1] / "experiments" / "fashion-best.toml")
    return opts, train_run(opts, tmp_path_factory.mktemp("fashion-best") / "fp32")
