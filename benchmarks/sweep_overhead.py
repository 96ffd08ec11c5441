"""Overhead per sweep trial beyond its training: a digits sweep with one worker, then, per trial, the time from
Optuna's start to its end minus the seconds spent in training epochs (history.csv). The rest is building the
model, writing the run folder and checkpoints, evaluating the test split and the study's SQLite writes.

    PYTHONPATH=src python benchmarks/sweep_overhead.py [--trials 10] [--epochs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlplab.runs.sweep import run_sweep, open_existing_study
from mlplab.runs.sweep_space import parse_sweep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    spec = parse_sweep({"sweep": {"data": "digits", "trials": args.trials, "pruner": "none"},
                        "fixed": {"epochs": args.epochs, "val_split": 0.2, "model": "64:relu,10:softmax"},
                        "space": {"lr": {"low": 0.001, "high": 0.1, "log": True}}})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sweep"
        t0 = time.perf_counter()
        run_sweep(spec, out, workers=1)
        total = time.perf_counter() - t0
        trials = open_existing_study(out).get_trials()
        over, train = [], []
        for t in trials:
            wall = (t.datetime_complete - t.datetime_start).total_seconds()
            train.append(t.user_attrs["seconds"])
            over.append(wall - t.user_attrs["seconds"])
    print(f"{len(trials)} trials, {args.epochs} epochs each on digits, 1 worker")
    print(f"training per trial: median {statistics.median(train):.3f} s")
    print(f"overhead per trial beyond its training: median {statistics.median(over):.3f} s, "
          f"max {max(over):.3f} s (first trial {over[0]:.3f} s)")
    print(f"whole sweep: {total:.1f} s, of which {total - sum(train) - sum(over):.1f} s starting the worker "
          f"(torch import) and the study")


if __name__ == "__main__":
    main()
