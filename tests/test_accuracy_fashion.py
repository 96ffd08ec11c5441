"""The README's accuracy claim, checked on real data: experiments/fashion-best.toml (the notebook's network,
a better optimiser recipe) reaches >= 89.5% Fashion-MNIST test accuracy. About 2 minutes on 2 CPU cores."""

from pathlib import Path

import pytest

DEBIAN = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN.exists(), reason="Debian's dataset-fashion-mnist package is not installed")
def test_fashion_best_recipe_reaches_89_5_percent(fashion_best_fp32):
    opts, result = fashion_best_fp32  # trained once per session (conftest.py), also the bf16 test's reference
    assert opts.model == "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"
    assert opts.precision == "fp32"
    m = result.metrics
    assert m["n_test"] == 10_000
    assert m["test_accuracy"] >= 0.895, m["test_accuracy"]
    assert len(result.history.rows) == opts.epochs
    # the LR decayed to ~0 along the cosine (the recipe's point), and validation tracked training
    assert result.history.rows[-1]["lr"] < 0.001 * opts.lr
    assert result.history.rows[-1]["val_accuracy"] >= 0.89


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN.exists(), reason="Debian's dataset-fashion-mnist package is not installed")
def test_best_recipe_reaches_90_5_percent(tmp_path):
    """experiments/best.toml (issue 18's goal: the notebook's architecture, >= 90.5% Fashion-MNIST test accuracy in
    <= 60 s of training on the 2-core machine; the time is the README's measurement, not asserted here)."""
    from mlplab.runs.config import load_train_config
    from mlplab.runs.session import train_run

    opts = load_train_config(Path(__file__).resolve().parents[1] / "experiments" / "best.toml")
    # the notebook's architecture: 784-512-512-10, relu, softmax (dropout is free)
    assert [p for p in opts.model.split(",") if not p.startswith("dropout:")] == ["512:relu", "512:relu", "10:softmax"]
    result = train_run(opts, tmp_path / "best")
    m = result.metrics
    assert m["n_test"] == 10_000
    assert m["test_accuracy"] >= 0.905, m["test_accuracy"]
