"""Time to accuracy, side by side: wall-clock seconds until the validation accuracy first reaches 89% on
Fashion-MNIST (validation: a held-out 10% of the training set), for

  * mlplab with its recommended recipe (experiments/fashion-best.toml), and
  * Keras with the notebook's recipe (SGD lr 0.01, EarlyStopping(val_loss, patience 4), batch 128),

each in its own process, same network (784-512-512-10, ReLU, dropout 0.2, softmax). The clock includes the
validation passes (a user waits for those too) and excludes data loading and start-up. Also prints the test
accuracy each reaches at the end of its recipe.

    python benchmarks/time_to_accuracy.py [--tf-python /path/to/venv-with-tensorflow/bin/python] [--target 0.89]
                                          [--only mlplab|keras] [--precision fp32|bf16]

--precision bf16 runs mlplab's recipe in bf16 mixed precision (Keras keeps its float32 recipe).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mlplab_child(target: float, precision: str = "fp32") -> None:
    from mlplab.runs.config import load_train_config
    from mlplab.data import load_dataset, to_features
    from mlplab.model import build
    from mlplab.train import Callback, Trainer
    from mlplab.train.predict import evaluate

    opts = load_train_config(ROOT / "experiments" / "fashion-best.toml")
    ds = load_dataset(opts.data)
    x, xt = to_features(ds.x_train), to_features(ds.x_test)
    model = build(opts.model, x.shape[1], seed=opts.seed)
    trainer = Trainer(model, optimizer=opts.optimizer, lr=opts.lr, momentum=opts.momentum, nesterov=opts.nesterov,
                      schedule=opts.schedule, batch_size=opts.batch_size, seed=opts.seed, precision=precision)
    reached: dict = {}

    class Clock(Callback):
        def on_epoch_end(self, tr, epoch, logs):
            if "at" not in reached and logs["val_accuracy"] >= target:
                reached.update(at=time.perf_counter() - t0, epoch=epoch + 1)

    t0 = time.perf_counter()
    history = trainer.fit(x, ds.y_train, epochs=opts.epochs, validation_split=opts.val_split, callbacks=[Clock()])
    total = time.perf_counter() - t0
    test = evaluate(model, xt, ds.y_test)["test_accuracy"]
    print(json.dumps({"name": "mlplab", "recipe": f"fashion-best.toml (SGD+Nesterov 0.9, lr 0.05 cosine, 40 epochs, "
                                                  f"{precision})",
                      "seconds_to_target": reached.get("at"), "epoch_reached": reached.get("epoch"),
                      "epochs_run": len(history.rows), "seconds": total, "test_accuracy": test}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=float, default=0.89)
    ap.add_argument("--tf-python", default=os.environ.get("MLPLAB_BENCH_TF_PYTHON", sys.executable))
    ap.add_argument("--only", choices=("mlplab", "keras"), help="run one contender (Keras's recipe takes ~6 min)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="mlplab's precision")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mlplab_child(args.target, args.precision)
        return 0
    rows = []
    for name, cmd, env in (
        ("mlplab", [sys.executable, __file__, "--child", "--target", str(args.target), "--precision", args.precision],
         {}),
        ("keras", [args.tf_python, str(ROOT / "benchmarks" / "keras_notebook.py"), "--target", str(args.target)],
         {"KERAS_BACKEND": "tensorflow"}),
    ):
        if args.only and name != args.only:
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"name": name, "note": f"skipped: {tail[:120]}"})
            continue
        r = json.loads(lines[-1])
        if name == "keras":
            r = {"name": "keras", "recipe": f"notebook (SGD lr 0.01, EarlyStopping val_loss:4), {r['backend']}",
                 "seconds_to_target": r[f"seconds_to_val_acc_{args.target}"], "epoch_reached": r["epoch_reached"],
                 "epochs_run": r["epochs_run"], "seconds": r["seconds"], "test_accuracy": r["test_accuracy"]}
        rows.append(r)
    print(f"| contender | recipe | s to val acc {args.target} | epoch | epochs run | total s | test accuracy |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "note" in r:
            print(f"| {r['name']} | {r['note']} | | | | | |")
            continue
        reach = f"{r['seconds_to_target']:.1f}" if r["seconds_to_target"] is not None else "not reached"
        print(f"| {r['name']} | {r['recipe']} | {reach} | {r['epoch_reached'] or '-'} | {r['epochs_run']} | "
              f"{r['seconds']:.1f} | {r['test_accuracy']:.4f} |")
    mine = next((r for r in rows if r["name"] == "mlplab" and r.get("seconds_to_target")), None)
    other = next((r for r in rows if r["name"] == "keras" and r.get("seconds_to_target")), None)
    if mine and other:
        print(f"time-to-{args.target} speedup vs keras = {other['seconds_to_target'] / mine['seconds_to_target']:.2f}")
    elif mine:
        keras_row = next((r for r in rows if r["name"] == "keras" and "seconds" in r), None)
        if keras_row:
            print(f"keras did not reach {args.target} in {keras_row['seconds']:.0f} s; mlplab did in "
                  f"{mine['seconds_to_target']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
