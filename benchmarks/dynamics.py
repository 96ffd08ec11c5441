"""Training dynamics, side by side: (1) the cost of --snapshots default during training, paired runs with and
without, printing the ratio; (2) `mlplab dynamics` (aligned t-SNE, 2 hidden layers x 2,000 points x 21
snapshots, pages and pictures included) against independent openTSNE maps with default settings.

Data: scikit-learn's digits, upscaled to 16x16, shifted inside 20x20 and noised (offline; 60,000 + 2,000
images for part 1, 12,000 + 2,000 for part 2), so that a 20% validation split holds more than 2,000 points.

    PYTHONPATH=src python benchmarks/dynamics.py [--part 1|2] [--pairs 4] [--epochs 5] [--threads N]
                                                 [--repeat 2] [--independent 3]

Part 1 prints the paired wall-clock ratio, the CPU-time ratio, and the snapshots' own time inside each run
(the Snapshots callback times every weights copy, capture and write), which does not drift with the load of
other processes. With 2 threads on 2 cores while another process holds one, PyTorch's threads wait for each
other and identical runs took from 14 to 76 s; --threads 1 keeps the paired ratios usable there. Part 2 runs
the command as a user would (a fresh process), and prints its phases (scores.json's "timings") and the
quality of the aligned maps next to the independent ones it timed.
"""

from __future__ import annotations

import argparse
import os
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


def train(data: Path, out: Path, spec: str, epochs: int, snapshots: str | None,
          threads: int | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one training run."""
    from mlplab.runs.session import train_run
    from mlplab.train.options import TrainOptions

    opts = TrainOptions(data=str(data), model=spec, epochs=epochs, val_split=0.2, snapshots=snapshots,
                        threads=threads)
    start, cpu = time.perf_counter(), time.process_time()
    train_run(opts, out, overwrite=True)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--independent", type=int, default=3, help="independent openTSNE maps to time (extrapolated)")
    ap.add_argument("--part", type=int, choices=(1, 2), help="run only part 1 or part 2")
    ap.add_argument("--repeat", type=int, default=2, help="runs of the whole dynamics command (part 2)")
    ap.add_argument("--threads", type=int, help="training threads in part 1 (default: all cores, as mlplab train); "
                    "1 keeps CPU times comparable on a machine other processes load")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlplab-dyn-bench-"))
    if args.part != 2:
        part1(tmp, args)
    if args.part != 1:
        part2(tmp, args)


def part1(tmp: Path, args) -> None:
    import mlplab.runs.snapshots as snapshots_module

    big = make_data(tmp / "aug60k.npz", 60000)
    made = []  # (the runs' Snapshots callbacks, seconds to set each up); each records its snapshots' seconds
    original = snapshots_module.snapshot_callback

    def recording(*a, **k):
        start = time.perf_counter()
        made.append((original(*a, **k), time.perf_counter() - start))
        return made[-1][0]

    snapshots_module.snapshot_callback = recording
    train(big, tmp / "warm-up", SPEC, 1, None, args.threads)  # the first run pays one-time set-up (kernels)
    print(f"1) snapshot cost: notebook model, 60,000 images (48,000 train), {args.epochs} epochs, paired runs, "
          f"{args.threads or 'all'} thread(s) (load average {os.getloadavg()[0]:.1f} at the start)")
    ratios, cpu_ratios, shares, each = [], [], [], []
    for p in range(args.pairs):
        order = [None, "default"] if p % 2 == 0 else ["default", None]  # alternate, against drift in load
        t, c = {}, {}
        for snaps in order:
            t[snaps], c[snaps] = train(big, tmp / f"overhead-{snaps}", SPEC, args.epochs, snaps, args.threads)
        cb, setup = made[-1]
        ratios.append(t["default"] / t[None])
        cpu_ratios.append(c["default"] / c[None])
        shares.append((setup + sum(cb.seconds)) / t["default"])
        each += cb.seconds[1:]
        print(f"   pair {p + 1}: without {t[None]:.1f} s, with --snapshots default {t['default']:.1f} s, "
              f"ratio {ratios[-1]:.3f} (CPU {cpu_ratios[-1]:.3f}); set-up {setup:.2f} s + {len(cb.seconds)} "
              f"snapshots {sum(cb.seconds):.2f} s = {shares[-1]:.1%} of its time")
    print(f"   median ratio {np.median(ratios):.3f} ({(np.median(ratios) - 1) * 100:+.1f}% training time), CPU "
          f"{np.median(cpu_ratios):.3f}; snapshots' own time (set-up included): median {np.median(shares):.1%} "
          f"of training, {np.median(each) * 1000:.0f} ms per snapshot after epoch 0 (load average now "
          f"{os.getloadavg()[0]:.1f})")
    snapshots_module.snapshot_callback = original


def part2(tmp: Path, args) -> None:
    import json
    import resource

    print("2) mlplab dynamics: 20 epochs, dense_1 + dense_2, 2,000 validation points, aligned t-SNE")
    small = make_data(tmp / "aug12k.npz", 12000)
    run = tmp / "dyn-run"
    train(small, run, DYN_SPEC, 20, "every=1,layers=dense_1+dense_2,n=2000")
    for attempt in range(args.repeat):
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlplab", "dynamics", str(run), "--quiet"], check=True)
        whole = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        scores = json.loads((run / "dynamics" / "scores.json").read_text())
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in scores["timings"].items())
        print(f"   whole command (imports, maps, scores, page, GIF, curves): {whole:.1f} s wall, {cpu:.1f} s CPU "
              f"(load average {load:.1f} before); inside: {phases}")

    from openTSNE import TSNE

    from mlplab.inspect.dynamics import score_map
    from mlplab.runs.snapshots import load_series

    s = load_series(run)
    n_maps = len(s.epochs) * len(s.layers)
    start = time.perf_counter()
    independent = {}
    for e in range(args.independent):
        feats = np.asarray(s.acts["dense_2"][-1 - e], dtype=np.float32)
        independent[len(s.epochs) - 1 - e] = (TSNE(random_state=0).fit(feats), feats)
    each = (time.perf_counter() - start) / args.independent
    print(f"   independent openTSNE maps, default settings: {each:.1f} s each x {n_maps} maps = "
          f"{each * n_maps:.0f} s (timed {args.independent}, extrapolated)")
    print(f"   ratio independent / aligned command: {each * n_maps / whole:.1f}x")
    aligned = scores["layers"]["dense_2"]
    for e, (coords, feats) in sorted(independent.items()):
        knn, _, trust = score_map(np.asarray(coords), feats, s.labels)
        print(f"   dense_2 epoch {e}: 10-NN accuracy aligned {aligned['knn_accuracy_map'][e]:.3f} vs independent "
              f"{knn:.3f}, trustworthiness {aligned['trustworthiness'][e]:.3f} vs {trust:.3f}")


if __name__ == "__main__":
    main()
