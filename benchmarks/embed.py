"""t-SNE side by side on hidden features of the notebook's net: scikit-learn, openTSNE defaults, mlplab, UMAP.

    python benchmarks/embed.py            # 10,000 test images, layer dense_2 (512-d)
    python benchmarks/embed.py --n-all    # all 70,000 Fashion-MNIST images (sklearn skipped: minutes)

Trains the notebook model (784-512-512-10, dropout 0.2) for a couple of epochs on Fashion-MNIST, takes dense_2
activations, then times each contender on the same vectors and scores every map with mlplab.inspect.quality.
Prints a table and, last, `tsne speedup vs sklearn = X`. Times are wall-clock on whatever else the machine
is running: compare ratios from one run, not numbers across runs. It never asserts a time.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def hidden_vectors(n_all: bool, epochs: int, seed: int, run_dir):
    """Train the notebook net as a real run (so `mlplab embed` can be timed on it) and return dense_2 vectors."""
    from mlplab import activations, load_dataset, open_run, to_features
    from mlplab.runs.config import TrainOptions
    from mlplab.runs.session import train_run

    ds = load_dataset("fashion-mnist")
    x_train, x_test = to_features(ds.x_train), to_features(ds.x_test)
    t = time.perf_counter()
    opts = TrainOptions.from_mapping(dict(data="fashion-mnist", optimizer="adam", lr=1e-3, epochs=epochs,
                                          batch_size=128, val_split=0.0, seed=seed))
    train_run(opts, run_dir)
    model = open_run(run_dir).model()
    print(f"trained {epochs} epochs in {time.perf_counter() - t:.1f} s")
    if n_all:
        x, y = np.concatenate([x_train, x_test]), np.concatenate([ds.y_train, ds.y_test])
    else:
        x, y = x_test, ds.y_test
    return activations(model, x, "dense_2")["dense_2"], y


def contenders(n_all: bool, seed: int):
    cores = len(os.sched_getaffinity(0))

    def sklearn_tsne(h):
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, random_state=seed).fit_transform(h)

    def opentsne_default(h):
        from openTSNE import TSNE

        return np.asarray(TSNE(n_jobs=cores, random_state=seed).fit(h))

    def mlplab_tsne(h):
        from mlplab.inspect import embed

        return embed(h, "tsne", seed=seed).coords  # the whole pipeline: checks, PCA-50, openTSNE, float32

    def umap_warm(h):
        from mlplab.inspect import embed

        return embed(h, "umap", seed=seed).coords

    out = [] if n_all else [("sklearn TSNE", sklearn_tsne), ("openTSNE default", opentsne_default)]
    out.append(("mlplab tsne", mlplab_tsne))
    try:
        import umap  # noqa: F401
        out.append(("umap-learn (warm)", umap_warm))
    except ImportError:
        print("umap-learn not installed: skipped")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-all", action="store_true", help="all 70,000 images instead of the 10,000 test images")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from mlplab.inspect import embed, quality

    import tempfile

    run_dir = os.path.join(tempfile.mkdtemp(prefix="mlplab-embed-bench-"), "run")
    h, y = hidden_vectors(args.n_all, args.epochs, args.seed, run_dir)
    print(f"{len(h):,} vectors of {h.shape[1]} dims (dense_2), {len(os.sched_getaffinity(0))} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    runs = contenders(args.n_all, args.seed)
    if any(name.startswith("umap") for name, _ in runs):
        # numba compiles umap-learn on first use: keep that out of the time. 5,000 points, because above 4,096
        # umap-learn switches from exact neighbours to NN-descent, whose compilation a smaller warm-up would miss
        embed(h[:5000], "umap", seed=args.seed)
    rows = []
    for name, fn in runs:
        t = time.perf_counter()
        coords = fn(h)
        seconds = time.perf_counter() - t
        q = quality(coords, y, h, seed=args.seed)
        rows.append((name, seconds, q["knn_accuracy"], q["trustworthiness"]))
        print(f"  {name}: {seconds:.1f} s", flush=True)

    if not args.n_all:
        # The whole command a user runs: start-up, data, activations, t-SNE, quality, PNG and the HTML explorer
        # with a thumbnail per point. Its quality numbers come from the JSON it writes.
        import json
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "mlplab", "embed", run_dir, "--layer", "dense_2", "--method", "tsne",
               "--n", str(len(h)), "--seed", str(args.seed), "-q"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        seconds = time.perf_counter() - t
        meta = json.load(open(os.path.join(run_dir, "embeddings", "dense_2-tsne.json")))
        q = meta["quality"]
        rows.append(("mlplab embed (CLI)", seconds, q["knn_accuracy"], q["trustworthiness"]))
        print(f"  mlplab embed (CLI): {seconds:.1f} s", flush=True)

    print()
    print(f"{'method':<20}{'seconds':>9}{'10-NN acc':>11}{'trust':>8}")
    for name, seconds, acc, trust in rows:
        print(f"{name:<20}{seconds:>9.1f}{acc:>11.3f}{trust:>8.3f}")
    times = {name: seconds for name, seconds, *_ in rows}
    if "sklearn TSNE" in times:
        # the measure: the whole `mlplab embed` command against scikit-learn's TSNE alone
        print(f"tsne speedup vs sklearn = {times['sklearn TSNE'] / times['mlplab embed (CLI)']:.2f}")
    else:
        print("tsne speedup vs sklearn = n/a (sklearn not run at this size)")


if __name__ == "__main__":
    main()
