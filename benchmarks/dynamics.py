"""Training dynamics, side by side: (1) the cost of --snapshots default during training, paired runs with and
without, printing the ratio; (2) `mlplab dynamics` (aligned t-SNE, 2 hidden layers x 2,000 points x 21
snapshots, pages and pictures included) against independent openTSNE maps with default settings.

Data: scikit-learn's digits, upscaled to 16x16, shifted inside 20x20 and noised (offline, 12,000 + 2,000
images), so that a 20% validation split holds more than 2,000 points.

    PYTHONPATH=src python benchmarks/dynamics.py [--pairs 2] [--epochs 3] [--independent 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPEC = "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"  # the notebook's model
DYN_SPEC = "256:relu,dropout:0.2,128:relu,10:softmax"


def make_data(path: Path, n_train: int, seed: int = 0) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    img = d.images / 16.0

    def aug(n):
        i = rng.integers(0, len(img), n)
        big = np.kron(img[i], np.ones((1, 2, 2)))
        out = np.zeros((n, 20, 20))
        dx, dy = rng.integers(0, 5, n), rng.integers(0, 5, n)
        for k in range(n):
            out[k, dy[k]:dy[k] + 16, dx[k]:dx[k] + 16] = big[k]
        out += rng.normal(0, 0.08, out.shape)
        return (np.clip(out, 0, 1) * 255).astype(np.uint8), d.target[i]

    xtr, ytr = aug(n_train)
    xte, yte = aug(2000)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


def train(data: Path, out: Path, spec: str, epochs: int, snapshots: str | None) -> float:
    from mlplab.runs.session import train_run
    from mlplab.train.options import TrainOptions

    opts = TrainOptions(data=str(data), model=spec, epochs=epochs, val_split=0.2, snapshots=snapshots)
    start = time.perf_counter()
    train_run(opts, out, overwrite=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--independent", type=int, default=3, help="independent openTSNE maps to time (extrapolated)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlplab-dyn-bench-"))
    big = make_data(tmp / "aug60k.npz", 60000)

    print(f"1) snapshot cost: notebook model, 60,000 images (48,000 train), {args.epochs} epochs, paired runs")
    ratios = []
    for p in range(args.pairs):
        order = [None, "default"] if p % 2 == 0 else ["default", None]  # alternate, against drift in load
        t = {}
        for snaps in order:
            t[snaps] = train(big, tmp / f"overhead-{snaps}", SPEC, args.epochs, snaps)
        ratios.append(t["default"] / t[None])
        print(f"   pair {p + 1}: without {t[None]:.1f} s, with --snapshots default {t['default']:.1f} s, "
              f"ratio {ratios[-1]:.3f}")
    print(f"   median ratio {np.median(ratios):.3f} ({(np.median(ratios) - 1) * 100:+.1f}% training time)")

    print("2) mlplab dynamics: 20 epochs, dense_1 + dense_2, 2,000 validation points, aligned t-SNE")
    small = make_data(tmp / "aug12k.npz", 12000)
    run = tmp / "dyn-run"
    train(small, run, DYN_SPEC, 20, "every=1,layers=dense_1+dense_2,n=2000")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlplab", "dynamics", str(run), "--quiet"], check=True)
    whole = time.perf_counter() - start
    print(f"   whole command (imports, maps, scores, page, GIF, curves): {whole:.1f} s")

    from openTSNE import TSNE

    from mlplab.runs.snapshots import load_series

    s = load_series(run)
    n_maps = len(s.epochs) * len(s.layers)
    start = time.perf_counter()
    for e in range(args.independent):
        TSNE(random_state=0).fit(np.asarray(s.acts["dense_2"][-1 - e], dtype=np.float32))
    each = (time.perf_counter() - start) / args.independent
    print(f"   independent openTSNE maps, default settings: {each:.1f} s each x {n_maps} maps = "
          f"{each * n_maps:.0f} s (timed {args.independent}, extrapolated)")
    print(f"   ratio independent / aligned command: {each * n_maps / whole:.1f}x")


if __name__ == "__main__":
    main()
