"""`mlplab train`, `evaluate`, `summary` and `predict`."""

from __future__ import annotations

import math
from pathlib import Path

import click

from mlplab.cli.notes import note_cpu_kernels
from mlplab.errors import MlplabError

# flag name -> TrainOptions key. Every flag defaults to None so that we know which ones were given:
# given flags override --config, which overrides the built-in defaults.
TRAIN_FLAGS = {
    "data": "data", "model": "model", "loss": "loss", "optimizer": "optimizer", "lr": "lr",
    "momentum": "momentum", "nesterov": "nesterov", "weight_decay": "weight_decay", "schedule": "schedule",
    "batch_size": "batch_size", "epochs": "epochs", "val_split": "val_split", "early_stop": "early_stop",
    "restore_best": "restore_best", "min_delta": "min_delta", "init": "init", "seed": "seed",
    "device": "device", "threads": "threads", "precision": "precision",
}
RESUMABLE_FLAGS = {"epochs", "device", "threads"}


def _console():
    from rich.console import Console

    return Console(highlight=False)


@click.command()
@click.option("--data", help="Dataset name (mnist, fashion-mnist, kmnist, digits) or a path (.npz, IDX folder, CSV, image folder).")
@click.option("--model", help="Model spec, e.g. 512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory to create.")
@click.option("--loss", help="categorical_crossentropy (default), binary_crossentropy or mse.")
@click.option("--optimizer", help="sgd (default), adam, adamw or rmsprop.")
@click.option("--lr", type=float, help="Learning rate (default 0.01).")
@click.option("--momentum", type=float, help="Momentum for sgd/rmsprop (default 0).")
@click.option("--nesterov/--no-nesterov", default=None, help="Nesterov momentum (sgd).")
@click.option("--weight-decay", type=float, help="L2 weight decay (default 0).")
@click.option("--schedule", help="LR schedule: constant (default), step, cosine, onecycle.")
@click.option("--batch-size", type=int, help="Batch size (default 128).")
@click.option("--epochs", type=int, help="Train until this many epochs in total (default 20).")
@click.option("--val-split", type=float, help="Seeded stratified validation fraction (default 0.1; 0 for none).")
@click.option("--early-stop", help="METRIC:PATIENCE, e.g. val_loss:4 (Keras EarlyStopping).")
@click.option("--restore-best/--no-restore-best", default=None, help="With --early-stop: keep the best epoch's weights.")
@click.option("--min-delta", type=float, help="With --early-stop: smallest change that counts as an improvement.")
@click.option("--init", help="Weight initialiser: glorot_uniform (default), glorot_normal, he_uniform, he_normal.")
@click.option("--seed", type=int, help="One seed for initialisation, split, shuffling and dropout (default 0).")
@click.option("--device", help="cpu (default), cuda, cuda:N or auto.")
@click.option("--threads", type=int, help="CPU threads (default: all cores).")
@click.option("--precision", help="fp32 (default) or bf16: bf16 products with float32 accumulation and weights "
              "(Keras's name mixed_bfloat16 works too).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML file with the same options (flags override).")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue an interrupted or finished run to --epochs.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory at --out.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def train(out, config_file, resume, overwrite, quiet, **flags):
    """Train an MLP and write a run directory (weights, history, metrics, summary)."""
    from mlplab.config import TrainOptions, load_train_config
    from mlplab.train.session import resume_run, train_run

    given = {k: v for k, v in flags.items() if v is not None}
    console = _console()
    if not quiet:
        note_cpu_kernels(given.get("device"))
    if resume is not None:
        stray = sorted(set(given) - RESUMABLE_FLAGS) + (["--out"] if out else []) + (["--config"] if config_file else [])
        if stray:
            names = ", ".join("--" + s.replace("_", "-").lstrip("-") for s in stray)
            raise MlplabError(f"--resume continues a run with its own settings; only --epochs, --device and "
                              f"--threads may be given (got {names})")
        progress = _progress(quiet, console, given.get("epochs"), resume)
        result = resume_run(resume, epochs=given.get("epochs"), device=given.get("device"),
                            threads=given.get("threads"), callbacks=[progress] if progress else [])
    else:
        if out is None:
            raise MlplabError("--out RUN_DIR is required (or --resume RUN to continue a run)")
        base = load_train_config(config_file) if config_file else TrainOptions()
        opts = TrainOptions.from_mapping(given, where="options", base=base)
        progress = None
        if not quiet:
            from mlplab.cli.progress import ConsoleProgress

            progress = ConsoleProgress(opts.epochs, console, show_lr=opts.schedule != "constant")
        result = train_run(opts, out, overwrite=overwrite, callbacks=[progress] if progress else [])
    if progress is not None:
        progress.on_train_end(None)
    _report_training(result, console, quiet)


def _progress(quiet, console, epochs, run_path):
    if quiet:
        return None
    from mlplab.cli.progress import ConsoleProgress
    from mlplab.run import open_run

    run = open_run(run_path)
    total = epochs or int(run.config["train"]["epochs"])
    return ConsoleProgress(total, console, show_lr=run.config["train"].get("schedule", "constant") != "constant")


def _report_training(result, console, quiet):
    h = result.history
    if result.interrupted_at is not None:
        epoch, batch = result.interrupted_at
        click.echo(f"mlplab: interrupted in epoch {epoch} after batch {batch}; {h.epochs_done} whole epochs are saved. "
                   f"Continue with: mlplab train --resume {result.path} --epochs N", err=True)
        raise SystemExit(130)
    if quiet:
        return
    if h.stopped_early_at:
        console.print(f"Early stopping at epoch {h.stopped_early_at}"
                      + (f"; restored the weights of epoch {h.restored_epoch}" if h.restored_epoch else ""))
    m = result.metrics
    console.print(f"Test accuracy: {m['test_accuracy']:.4f} (loss {m['test_loss']:.4f}) on {m['n_test']:,} samples")
    console.print(f"Run saved to {result.path}")


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", help="Evaluate on another dataset's test split (name or path) instead of the run's.")
@click.option("--quiet", "-q", is_flag=True, help="Write metrics.json only.")
def evaluate(run, data, quiet):
    """Test loss and accuracy, per-class precision/recall/F1 and the confusion matrix of a run."""
    from mlplab.atomic import atomic_write_json
    from mlplab.data import load_dataset
    from mlplab.run import open_run
    from mlplab.train.session import evaluate_model

    r = open_run(run)
    model = r.model()
    if data is None:
        ds, name = r.dataset(), r.config["data"]["name"]
    else:
        ds, name = load_dataset(data), data
    metrics = evaluate_model(model, ds, loss=r.config["train"].get("loss", "categorical_crossentropy"),
                             data_name=name)
    target = r.path / ("metrics.json" if data is None else "metrics-" + _slug(name) + ".json")
    atomic_write_json(target, metrics)
    if not quiet:
        _print_metrics(metrics, _console())
        click.echo(f"Metrics written to {target}")


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(text).name or text)[:60]


def _print_metrics(m: dict, console) -> None:
    from rich.table import Table

    console.print(f"Test loss {m['test_loss']:.4f}   accuracy {m['test_accuracy']:.4f}   "
                  f"macro F1 {m['macro_f1']:.4f}   ({m['n_test']:,} samples of {m['data']})")
    table = Table(title="Per class", title_justify="left")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in m["per_class"]:
        table.add_row(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      f"{row['support']:,}")
    console.print(table)
    names = m["class_names"]
    cm = Table(title="Confusion matrix (rows: true, columns: predicted)", title_justify="left")
    cm.add_column("")
    short = [n[:7] for n in names]
    for s in short:
        cm.add_column(s, justify="right")
    for i, (name, row) in enumerate(zip(short, m["confusion_matrix"])):
        cm.add_row(name, *[f"[bold]{v}[/bold]" if i == j else str(v) for j, v in enumerate(row)])
    console.print(cm)


@click.command()
@click.argument("run", required=False, type=click.Path(path_type=Path))
@click.option("--model", "spec", help="Summarise a spec instead of a run.")
@click.option("--input", "input_dim", type=int, help="Input size for --model (e.g. 784).")
@click.option("--configs", is_flag=True, help="Also print each layer's configuration.")
def summary(run, spec, input_dim, configs):
    """Keras-style summary table of a run's model, or of `--model SPEC --input N`."""
    from mlplab.model import build, layer_configs
    from mlplab.model import summary as summarise

    if (run is None) == (spec is None):
        raise MlplabError("give either a RUN directory or --model SPEC --input N")
    if spec is not None:
        if input_dim is None or input_dim <= 0:
            raise MlplabError("--model needs --input N, the number of input features (e.g. 784), N >= 1")
        model = build(spec, input_dim)
    else:
        from mlplab.run import open_run

        model = open_run(run).model()
    click.echo(summarise(model))
    if configs:
        import json

        for cfg in layer_configs(model):
            click.echo(json.dumps(cfg))


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--invert", is_flag=True, help="Invert grey levels (for dark-on-light pictures; MNIST is light-on-dark).")
@click.option("--top", type=click.IntRange(1, 100), default=3, show_default=True, help="How many classes to show.")
def predict(run, files, invert, top):
    """Classify PNG/JPG/NPY images with a trained run: class and top-k probabilities."""
    import numpy as np
    from rich.table import Table

    from mlplab.inputs import load_image
    from mlplab.run import open_run
    from mlplab.train.predict import predict as predict_proba

    r = open_run(run)
    model = r.model()
    shape = tuple(r.config["data"].get("input_shape") or [r.config["model"]["input_dim"]])
    batch = np.stack([load_image(f, shape, invert=invert) for f in files])
    proba = predict_proba(model, batch)
    names = r.class_names
    top = min(top, proba.shape[1])
    table = Table()
    table.add_column("file")
    table.add_column("class")
    for k in range(top):
        table.add_column(f"top {k + 1}", justify="right")
    for f, p in zip(files, proba):
        order = np.argsort(-p, kind="stable")[:top]
        label = lambda i: names[i] if i < len(names) else str(i)  # noqa: E731
        table.add_row(str(f), label(order[0]), *[f"{label(i)} {p[i]:.3f}" for i in order])
    _console().print(table)
