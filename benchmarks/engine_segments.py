"""The engine against its own matrix products, finely interleaved in one process: a noise-resistant companion to
train_throughput.py on a shared machine.

    python benchmarks/engine_segments.py [--segments 80] [--steps 30] [--threads N] [--precision fp32|bf16]

The notebook's net (512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax), Fashion-MNIST batches of 128, SGD
lr 0.01. Alternates short segments of `--steps` training steps: the matmul bound (the 8 products of forward +
backward with preallocated outputs, the fastest form of the bound measured here), then mlplab's
engine.train_step with FusedSGD (the Trainer's hot path) on the same batches. A burst of load from other
processes lasts longer than a segment pair, so the median of the per-pair ratios bound / mlplab is far steadier
than a ratio of whole-epoch times. Prints the median ratio and the ratio of the best segments. Never asserts
times. With --precision bf16 mlplab's segments run the bf16 step (promising, as the Trainer does within an
epoch, that nothing else wrote the weights between steps of a segment), and two more segments per pair give paired
ratios against the bf16 bound (the 8 products on bf16 operands with the bf16 GEMM the step uses, float32 outputs)
and against mlplab's fp32 step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import BATCH, LR, SPEC, bf16_products, load_data  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segments", type=int, default=80)
    ap.add_argument("--steps", type=int, default=30, help="training steps per segment")
    ap.add_argument("--threads", type=int, default=None, help="default: all cores")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="mlplab's precision")
    args = ap.parse_args(argv)

    import torch

    import mlplab
    from mlplab.model import engine, kernels
    from mlplab.model.fused_sgd import FusedSGD

    if args.threads:
        torch.set_num_threads(args.threads)
    x, y, source = load_data(45_000)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    w = [torch.randn(512, 784, generator=gen), torch.randn(512, 512, generator=gen),
         torch.randn(10, 512, generator=gen)]
    grads = [torch.empty_like(v) for v in w]
    out = [torch.empty(BATCH, 512), torch.empty(BATCH, 512), torch.empty(BATCH, 10), torch.empty(BATCH, 512),
           torch.empty(BATCH, 512)]
    model = mlplab.build(SPEC, 784, seed=0)
    sgd = FusedSGD(torch.optim.SGD(model.parameters(), lr=LR))
    dropout_gen = torch.Generator().manual_seed(1)
    span = args.steps * BATCH

    def bound(s0: int) -> float:
        t0 = time.perf_counter()
        for s in range(s0, s0 + span, BATCH):
            xb = xt[s:s + BATCH]                                  # (B, 784)
            h1 = torch.mm(xb, w[0].t(), out=out[0])               # (B, 512)
            h2 = torch.mm(h1, w[1].t(), out=out[1])               # (B, 512)
            z = torch.mm(h2, w[2].t(), out=out[2])                # (B, 10)
            torch.mm(z.t(), h2, out=grads[2])                     # (10, 512)
            d2 = torch.mm(z, w[2], out=out[3])                    # (B, 512)
            torch.mm(d2.t(), h1, out=grads[1])                    # (512, 512)
            d1 = torch.mm(d2, w[1], out=out[4])                   # (B, 512)
            torch.mm(d1.t(), xb, out=grads[0])                    # (512, 784)
        return time.perf_counter() - t0

    def mine(s0: int, precision: str = args.precision) -> float:
        t0 = time.perf_counter()
        for s in range(s0, s0 + span, BATCH):
            loss_sum, n_correct = engine.train_step(model, xt[s:s + BATCH], yt[s:s + BATCH],
                                                    "categorical_crossentropy", dropout_gen, sgd=sgd,
                                                    precision=precision, weights_untouched=s > s0)
            float(loss_sum), float(n_correct)  # what the Trainer reads per batch
        return time.perf_counter() - t0

    bf16_step = bf16_products() if args.precision == "bf16" else None
    xt_bf16 = xt.to(torch.bfloat16) if bf16_step is not None else None

    def bound_bf16(s0: int) -> float:
        t0 = time.perf_counter()
        for s in range(s0, s0 + span, BATCH):
            bf16_step(xt_bf16[s:s + BATCH])
        return time.perf_counter() - t0

    starts = [(i * span) % (len(xt) - span) for i in range(args.segments)]
    bound(0), mine(0)  # warm-up: thread pool, BLAS kernels, the compiled step's buffers
    b_times, m_times, f_times, h_times = [], [], [], []
    if args.precision == "bf16":
        mine(0, "fp32")
        if bf16_step is not None:
            bound_bf16(0)
    for s0 in starts:
        b_times.append(bound(s0))
        m_times.append(mine(s0))
        if args.precision == "bf16":
            f_times.append(mine(s0, "fp32"))
            if bf16_step is not None:
                h_times.append(bound_bf16(s0))
    ratios = [b / m for b, m in zip(b_times, m_times)]
    print(f"data: {source}; {args.segments} segment pairs of {args.steps} steps, batch {BATCH}, "
          f"threads {torch.get_num_threads()}; CPU path: {kernels.status()}")
    print(f"bound  ms/step: median {statistics.median(b_times) / args.steps * 1e3:.2f}, "
          f"best {min(b_times) / args.steps * 1e3:.2f}")
    print(f"mlplab ms/step: median {statistics.median(m_times) / args.steps * 1e3:.2f}, "
          f"best {min(m_times) / args.steps * 1e3:.2f}")
    print(f"best segments: mlplab/gemm = {min(b_times) / min(m_times):.2f}")
    print(f"median of paired ratios: mlplab/gemm = {statistics.median(ratios):.2f}")
    if f_times:
        print(f"mlplab fp32 ms/step: median {statistics.median(f_times) / args.steps * 1e3:.2f}")
        print(f"median of paired ratios: mlplab bf16 step / fp32 matmul bound = "
              f"{statistics.median(m / b for b, m in zip(b_times, m_times)):.2f}; bf16 step / mlplab fp32 step = "
              f"{statistics.median(m / f for f, m in zip(f_times, m_times)):.2f}")
    if h_times:
        print(f"bf16 bound ms/step: median {statistics.median(h_times) / args.steps * 1e3:.2f}, "
              f"best {min(h_times) / args.steps * 1e3:.2f}")
        print(f"median of paired ratios: mlplab bf16 / bf16 bound = "
              f"{statistics.median(h / m for h, m in zip(h_times, m_times)):.2f} (fraction of the bound's speed); "
              f"best segments {min(h_times) / min(m_times):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
