"""Training throughput, side by side: seconds per epoch for the notebook's net, each contender in its own process.

    python benchmarks/train_throughput.py [--quick] [--threads N] [--only a,b,...]

Setting (issue 4): Fashion-MNIST's first 45,000 training images (random data of the same shape when the files are
absent), the notebook's model 512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax, SGD (lr 0.01), batch 128,
categorical cross-entropy. Each contender runs in a fresh process: one warm-up epoch, then 3 timed epochs (the
process reports their median); this is repeated in 3 rounds that interleave the contenders (so a burst of load
from other processes on a shared machine hits them alike rather than one contender's rounds). The table shows the
median over rounds and the fraction of the matmul bound (the 8 matrix products of forward + backward alone,
measured the same way): the median over rounds of bound / contender, each ratio taken within one round.
The last line is `mlplab/gemm = F`, the fraction for mlplab's engine.

Times are wall-clock on whatever else the machine is doing: on a shared machine, run it twice and trust the ratios
more than the absolute numbers. This script prints ratios; it never asserts times.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SPEC = "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"
N_TRAIN, N_QUICK, BATCH, LR, RATE = 45_000, 9_000, 128, 0.01, 0.2
DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
CONTENDERS = {
    "gemm": "matmul bound (only the 8 products of forward + backward)",
    "mlplab": "mlplab (Trainer.fit; history seconds = training pass)",
    "torch": "PyTorch, tensors in memory, autograd, foreach SGD",
    "dataloader": "PyTorch with a DataLoader",
    "sklearn": "scikit-learn MLPClassifier (it has no dropout)",
    "keras_tf": "Keras on TensorFlow",
    "keras_torch": "Keras on PyTorch",
    "gemm_bf16": "bf16 gemm bound (the 8 products, bf16 in, fp32 accumulate)",
    "mlplab_bf16": "mlplab bf16 (Trainer.fit, precision bf16)",
    "gemm_onednn": "bf16 matmul via oneDNN (torch.mm on bf16 tensors, bf16 out)",
    "torch_bf16": "PyTorch autocast bf16 (autograd, foreach SGD)",
    "keras_tf_bf16": "Keras on TensorFlow, mixed_bfloat16 policy",
    "keras_torch_bf16": "Keras on PyTorch, mixed_bfloat16 policy",
}


# --- data: a few lines of IDX reading, so the benchmark does not depend on mlplab.data ------------------------
def load_data(n: int):
    import numpy as np

    images, labels = DATA_DIR / "train-images-idx3-ubyte.gz", DATA_DIR / "train-labels-idx1-ubyte.gz"
    if images.exists() and labels.exists():
        with gzip.open(images) as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)[:n]
        with gzip.open(labels) as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
        source = f"Fashion-MNIST ({DATA_DIR})"
    else:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        source = "random data of Fashion-MNIST's shape (files not found)"
    return (x.astype(np.float32) / 255.0), y.astype(np.int64), source


EPOCHS_TIMED = 3  # per process, after the warm-up; the process reports their median


def _timed(epoch_fn, repeats: int = EPOCHS_TIMED) -> list[float]:
    epoch_fn()  # warm-up: allocator, thread pool, BLAS kernels selected
    return [epoch_fn() for _ in range(repeats)]


# --- contenders (each runs in a fresh process; see main) ---------------------------------------------------------
def gemm_seconds(x, y):
    import torch

    xt = torch.from_numpy(x)
    n = xt.shape[0]
    g = torch.Generator().manual_seed(0)
    w = [torch.randn(512, 784, generator=g), torch.randn(512, 512, generator=g), torch.randn(10, 512, generator=g)]
    grads = [torch.empty_like(v) for v in w]

    def epoch():
        t0 = time.perf_counter()
        for s in range(0, n, BATCH):
            xb = xt[s:s + BATCH]                 # (B, 784)
            h1 = torch.mm(xb, w[0].t())          # (B, 512)
            h2 = torch.mm(h1, w[1].t())          # (B, 512)
            z = torch.mm(h2, w[2].t())           # (B, 10)
            torch.mm(z.t(), h2, out=grads[2])    # (10, 512)
            d2 = torch.mm(z, w[2])               # (B, 512)
            torch.mm(d2.t(), h1, out=grads[1])   # (512, 512)
            d1 = torch.mm(d2, w[1])              # (B, 512)
            torch.mm(d1.t(), xb, out=grads[0])   # (512, 784)
        return time.perf_counter() - t0

    return _timed(epoch), ""


def bf16_products():
    """The bf16 bound's step: a function of one bf16 batch (BATCH, 784) that runs the 8 products of forward +
    backward on bf16 operands with the bf16 GEMM mlplab's bf16 step uses (Kernels.gemm_bf16: float32 accumulation
    and output), into preallocated outputs; None when there is no such GEMM. engine_segments.py times it too."""
    import ctypes

    import torch

    from mlplab.model import kernels

    k = kernels.get()[torch.float32]
    address = k.gemm_bf16
    k.set_gemm_threads(torch.get_num_threads())  # as the bf16 step does before each call
    if address is None:
        return None
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    gemm = ctypes.CFUNCTYPE(None, i, i, i, i, i, i, f, p, i, p, i, f, p, i)(address)
    row, nt, tr = 101, 111, 112

    def mm(a, b, out, ta=False, tb=False):  # out (m, n) fp32 = op(a) op(b), a and b bf16 row-major
        m, k = (a.shape[1], a.shape[0]) if ta else a.shape
        n_ = b.shape[0] if tb else b.shape[1]
        gemm(row, tr if ta else nt, tr if tb else nt, m, n_, k, 1.0, a.data_ptr(), a.shape[1], b.data_ptr(),
             b.shape[1], 0.0, out.data_ptr(), n_)

    g = torch.Generator().manual_seed(0)
    w = [torch.randn(s, generator=g).to(torch.bfloat16) for s in ((512, 784), (512, 512), (10, 512))]
    f32 = {s: torch.empty(s) for s in ((BATCH, 512), (BATCH, 10), (10, 512), (512, 512), (512, 784))}
    b16 = {s: torch.randn(s).to(torch.bfloat16) for s in ((BATCH, 512), (BATCH, 10))}

    def step(xb):
        h, zz = b16[(BATCH, 512)], b16[(BATCH, 10)]
        mm(xb, w[0], f32[(BATCH, 512)], tb=True)
        mm(h, w[1], f32[(BATCH, 512)], tb=True)
        mm(h, w[2], f32[(BATCH, 10)], tb=True)
        mm(zz, h, f32[(10, 512)], ta=True)
        mm(zz, w[2], f32[(BATCH, 512)])
        mm(h, h, f32[(512, 512)], ta=True)
        mm(h, w[1], f32[(BATCH, 512)])
        mm(h, xb, f32[(512, 784)], ta=True)

    return step


def gemm_bf16_seconds(x, y):
    """The bf16 bound: the same 8 products on bf16 operands (converted once, outside the clock) with the bf16 GEMM
    mlplab's bf16 step uses (bf16_products)."""
    import torch

    step = bf16_products()
    if step is None:
        return None, "skipped: no bf16 GEMM with float32 output on this machine"
    xt = torch.from_numpy(x).to(torch.bfloat16)
    n = xt.shape[0]

    def epoch():
        t0 = time.perf_counter()
        for s in range(0, n - BATCH + 1, BATCH):
            step(xt[s:s + BATCH])
        return time.perf_counter() - t0

    return _timed(epoch), ""


def gemm_onednn_seconds(x, y):
    """The same 8 products as PyTorch's bf16 matmul computes them (oneDNN; bf16 outputs, float32 accumulation):
    the fastest bf16 product PyTorch offers on this CPU, for comparison with the bound above."""
    import torch

    xt = torch.from_numpy(x).to(torch.bfloat16)
    n = xt.shape[0]
    g = torch.Generator().manual_seed(0)
    w = [torch.randn(s, generator=g).to(torch.bfloat16) for s in ((512, 784), (512, 512), (10, 512))]
    out = {s: torch.empty(s, dtype=torch.bfloat16) for s in ((BATCH, 512), (BATCH, 10), (10, 512), (512, 512),
                                                             (512, 784))}
    h, zz = torch.randn(BATCH, 512).to(torch.bfloat16), torch.randn(BATCH, 10).to(torch.bfloat16)

    def epoch():
        t0 = time.perf_counter()
        for s in range(0, n - BATCH + 1, BATCH):
            xb = xt[s:s + BATCH]
            torch.mm(xb, w[0].t(), out=out[(BATCH, 512)])
            torch.mm(h, w[1].t(), out=out[(BATCH, 512)])
            torch.mm(h, w[2].t(), out=out[(BATCH, 10)])
            torch.mm(zz.t(), h, out=out[(10, 512)])
            torch.mm(zz, w[2], out=out[(BATCH, 512)])
            torch.mm(h.t(), h, out=out[(512, 512)])
            torch.mm(h, w[1], out=out[(BATCH, 512)])
            torch.mm(h.t(), xb, out=out[(512, 784)])
        return time.perf_counter() - t0

    return _timed(epoch), ""


def mlplab_bf16_seconds(x, y):
    return _timed(mlplab_epoch_seconds(x, y, precision="bf16")), ""


def torch_bf16_seconds(x, y):
    return torch_seconds(x, y, bf16=True)


def mlplab_epoch_seconds(x, y, *, seed: int = 0, precision: str = "fp32"):
    """mlplab as a user runs it: mlplab.fit's Trainer, one epoch per call; returns history's `seconds` (the
    training pass alone, validation excluded, as the issue defines it)."""
    from mlplab.train import Trainer

    model = __import__("mlplab").build(SPEC, x.shape[1], seed=seed)
    trainer = Trainer(model, optimizer="sgd", lr=LR, batch_size=BATCH, seed=seed, precision=precision)

    def epoch():
        history = trainer.fit(x, y, epochs=trainer.history.epochs_done + 1)
        return history.rows[-1]["seconds"]

    return epoch


def mlplab_seconds(x, y):
    return _timed(mlplab_epoch_seconds(x, y)), ""


def _torch_model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Dropout(RATE), nn.Linear(512, 512), nn.ReLU(),
                         nn.Dropout(RATE), nn.Linear(512, 10))


def torch_seconds(x, y, *, bf16: bool = False):
    """A plain PyTorch loop; bf16=True under torch.autocast (bf16 products, float32 loss), as its users write it."""
    import torch
    from torch.nn import functional as F

    model = _torch_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR, foreach=True)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n = xt.shape[0]

    def epoch():
        perm = torch.randperm(n)
        xs, ys = xt[perm], yt[perm]
        t0 = time.perf_counter()
        for s in range(0, n, BATCH):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(xs[s:s + BATCH])
            F.cross_entropy(logits.float(), ys[s:s + BATCH]).backward()
            opt.step()
        return time.perf_counter() - t0

    return _timed(epoch), ""


def dataloader_seconds(x, y):
    import torch
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    model = _torch_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR, foreach=True)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=BATCH, shuffle=True)

    def epoch():
        t0 = time.perf_counter()
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        return time.perf_counter() - t0

    return _timed(epoch), ""


def sklearn_seconds(x, y):
    import numpy as np
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(512, 512), solver="sgd", batch_size=BATCH, learning_rate_init=LR,
                        momentum=0.0, alpha=0.0, random_state=0)
    classes = np.arange(10)

    def epoch():
        t0 = time.perf_counter()
        clf.partial_fit(x, y, classes=classes)  # one pass over the data in minibatches
        return time.perf_counter() - t0

    return _timed(epoch), "no dropout"


def _keras_seconds(x, y, backend: str, policy: str | None = None):
    os.environ["KERAS_BACKEND"] = backend
    try:
        import keras
    except ImportError:
        return None, "skipped: not installed"
    if keras.backend.backend() != backend:
        return None, f"skipped: Keras is on {keras.backend.backend()}"
    if policy:
        keras.mixed_precision.set_global_policy(policy)
    # the output layer in float32 under a mixed policy, as Keras's mixed precision guide asks for softmax
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dropout(RATE), keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dropout(RATE),
                              keras.layers.Dense(10, activation="softmax", dtype="float32" if policy else None)])
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def epoch():
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=True)
        return time.perf_counter() - t0

    return _timed(epoch), f"Keras {keras.__version__}"


def keras_tf_seconds(x, y):
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return None, "skipped: not installed"
    return _keras_seconds(x, y, "tensorflow")


def keras_torch_seconds(x, y):
    return _keras_seconds(x, y, "torch")


def keras_tf_bf16_seconds(x, y):
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return None, "skipped: not installed"
    return _keras_seconds(x, y, "tensorflow", "mixed_bfloat16")


def keras_torch_bf16_seconds(x, y):
    return _keras_seconds(x, y, "torch", "mixed_bfloat16")


RUNNERS = {"gemm": gemm_seconds, "mlplab": mlplab_seconds, "torch": torch_seconds,
           "dataloader": dataloader_seconds, "sklearn": sklearn_seconds, "keras_tf": keras_tf_seconds,
           "keras_torch": keras_torch_seconds, "gemm_bf16": gemm_bf16_seconds, "mlplab_bf16": mlplab_bf16_seconds,
           "torch_bf16": torch_bf16_seconds, "gemm_onednn": gemm_onednn_seconds,
           "keras_tf_bf16": keras_tf_bf16_seconds, "keras_torch_bf16": keras_torch_bf16_seconds}


def _child(name: str, n: int, threads: int | None) -> None:
    """Run one contender in this (fresh) process and print one JSON line."""
    if threads:
        # before any BLAS/OpenMP pool starts
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            os.environ[var] = str(threads)
    used = threads or os.cpu_count()
    if not name.startswith("keras_tf"):  # the TensorFlow child may run in an interpreter without torch
        import torch

        if threads:
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
    x, y, source = load_data(n)
    try:
        seconds, note = RUNNERS[name](x, y)
    except ImportError as err:
        seconds, note = None, f"skipped: not installed ({err.name})"
    if seconds is not None:
        seconds = [statistics.median(seconds)]  # one number per process (round)
    print(json.dumps({"name": name, "seconds": seconds, "note": note, "source": source, "threads": used}))


def _paired_fraction(results: dict, name: str) -> float | None:
    """Median over rounds of bound / contender, each ratio taken within one round: the two ran minutes apart
    at most, so a slow period on a shared machine mostly cancels (a ratio of medians does not: one slow bound
    round and one fast contender round gave 1.40 here)."""
    bound, mine = results.get("gemm", {}).get("seconds"), results[name].get("seconds")
    if not bound or not mine or len(bound) != len(mine):
        return None
    return statistics.median(b / m for b, m in zip(bound, mine))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{N_QUICK:,} samples instead of {N_TRAIN:,}")
    ap.add_argument("--threads", type=int, default=None, help="threads per contender (default: all cores)")
    ap.add_argument("--only", default=None, help="comma-separated contenders: " + ",".join(CONTENDERS))
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of all contenders; the table shows medians over rounds")
    ap.add_argument("--tf-python", default=os.environ.get("MLPLAB_BENCH_TF_PYTHON"),
                    help="Python interpreter with TensorFlow + Keras for the keras_tf contender "
                         "(default: this one, or $MLPLAB_BENCH_TF_PYTHON)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n = N_QUICK if args.quick else N_TRAIN
    if args.child:
        _child(args.child, n, args.threads)
        return 0
    names = args.only.split(",") if args.only else list(CONTENDERS)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    results = {name: {"seconds": []} for name in names}
    for round_ in range(args.rounds):
        for name in names:
            if results[name]["seconds"] is None:
                continue  # skipped or failed in an earlier round
            python = args.tf_python if (name.startswith("keras_tf") and args.tf_python) else sys.executable
            cmd = [python, __file__, "--child", name] + (["--quick"] if args.quick else [])
            cmd += ["--threads", str(args.threads)] if args.threads else []
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                results[name] = {"seconds": None, "note": f"failed: {tail[:100]}"}
                continue
            r = json.loads(lines[-1])
            if r["seconds"] is None:
                results[name] = r
            else:
                r["seconds"] = results[name]["seconds"] + r["seconds"]
                results[name] = r
            print(f"  round {round_ + 1}: {name} {r.get('seconds')}", file=sys.stderr)
    first = next((r for r in results.values() if "source" in r), {})
    print(f"data: {first.get('source', '?')}, {n:,} samples, batch {BATCH}, SGD lr {LR}, dropout {RATE}, "
          f"threads {first.get('threads', '?')}; {args.rounds} rounds, each contender in a fresh process per round "
          f"(1 warm-up + {EPOCHS_TIMED} timed epochs, their median)")
    print(f"| {'contender':<58} | s/epoch | fraction of bound | note")
    print(f"|{'-' * 60}|---------|-------------------|-----")
    fractions = {}
    for name in names:
        r = results[name]
        if r.get("seconds"):
            med = statistics.median(r["seconds"])
            fractions[name] = _paired_fraction(results, name)
            frac = f"{fractions[name]:.2f}" if fractions[name] is not None else "n/a"
            spread = f"rounds {', '.join(f'{s:.2f}' for s in r['seconds'])}"
            print(f"| {CONTENDERS[name]:<58} | {med:7.2f} | {frac:>17} | {r.get('note') or ''} {spread}".rstrip())
        else:
            print(f"| {CONTENDERS[name]:<58} |       - |                 - | {r.get('note')}")
    mine = fractions.get("mlplab")
    print(f"mlplab/gemm = {mine:.2f}" if mine is not None else "mlplab/gemm = n/a")
    if "mlplab_bf16" in names:
        # issue 15's goals, as paired per-round ratios: mlplab bf16's epoch against the fp32 and bf16 bounds
        for bound in ("gemm", "gemm_bf16", "gemm_onednn"):
            b, m = results.get(bound, {}).get("seconds"), results["mlplab_bf16"].get("seconds")
            if b and m and len(b) == len(m):
                print(f"mlplab_bf16/{bound} time ratio = {statistics.median(mm / bb for bb, mm in zip(b, m)):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
