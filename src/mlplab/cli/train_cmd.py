"""`mlplab train`, `evaluate`, `summary` and `predict`."""

from __future__ import annotations

import math
import signal
import typing
from pathlib import Path

import click

from mlplab.cli import signal_exit_code
from mlplab.cli.notes import note_cpu_kernels
from mlplab.errors import MlplabError
from mlplab.train.options import TrainOptions, allowed_values


def option_flags(command):
    """One click option per training option, read from the options table (names, types, help, defaults).

    Every flag defaults to None so that we know which ones were given: given flags override --config, which
    overrides the built-in defaults.
    """
    hints = typing.get_type_hints(TrainOptions)
    for f in reversed(TrainOptions.fields()):
        if not f.metadata.get("flag", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if typing.get_origin(kind) is typing.Union:  # Optional[X]
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        text = f.metadata["help"]
        if f.metadata.get("choices"):
            text += f" One of: {allowed_values(f.name)}."
        if f.default is not None and f.default is not False and f.name != "model":
            text += f" Default: {f.default}."
        if kind is bool:
            command = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=text)(command)
        elif f.metadata.get("bare_value") is not None:
            # the value may be left out: click then passes flag_value (the next argument starting with '-'
            # is another flag, not this one's value)
            command = click.option(flag, f.name, type=kind, default=None, is_flag=False,
                                   flag_value=f.metadata["bare_value"], help=text)(command)
        else:
            command = click.option(flag, f.name, type=kind, default=None, help=text)(command)
    return command


# --resume continues a run with its own settings: only these options may change
RESUMABLE_FLAGS = {f.name for f in TrainOptions.fields() if f.metadata.get("resumable")}


def _console():
    from mlplab.cli.console import make_console

    return make_console()


@click.command()
@click.option("--out", type=click.Path(path_type=Path), help="Run directory to create.")
@option_flags
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML file with the same options (flags override).")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue an interrupted or finished run to --epochs.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory at --out.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def train(out, config_file, resume, overwrite, quiet, **flags):
    """Train an MLP and write a run directory (weights, history, metrics, summary)."""
    from mlplab.runs.config import load_train_config
    from mlplab.runs.session import resume_run, train_run

    import logging

    # the library logs its warnings as well as returning them; the CLI prints the returned ones (above),
    # so Python's last-resort handler must not print them a second time
    logging.getLogger("mlplab").addHandler(logging.NullHandler())
    given = {k: v for k, v in flags.items() if v is not None}
    console = _console()
    if not quiet:
        note_cpu_kernels(given.get("device"))
    if resume is not None:
        stray = (sorted(set(given) - RESUMABLE_FLAGS) + (["--out"] if out else []) + (["--config"] if config_file else [])
                 + (["--overwrite"] if overwrite else []))  # a resume appends to the run; it never replaces it
        if stray:
            names = ", ".join("--" + s.replace("_", "-").lstrip("-") for s in stray)
            allowed = ", ".join("--" + s.replace("_", "-") for s in sorted(RESUMABLE_FLAGS))
            raise MlplabError(f"--resume continues a run with its own settings; only {allowed} may be given "
                              f"(got {names})")
        progress = _progress(quiet, console, given.get("epochs"), resume)
        result = resume_run(resume, epochs=given.get("epochs"), device=given.get("device"),
                            threads=given.get("threads"), tensorboard=given.get("tensorboard"),
                            mlflow=given.get("mlflow"), callbacks=[progress] if progress else [])
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
    for line in result.warnings:  # the loggers' (a tracking server that stopped answering): always shown
        click.echo(f"mlplab: warning: {line}", err=True)
    _report_training(result, console, quiet)


def resume_command(path, epochs) -> str:
    """The exact command that continues a run to its target epochs (quoted for a POSIX shell)."""
    import shlex

    return f"mlplab train --resume {shlex.quote(str(path))} --epochs {int(epochs)}"


def _progress(quiet, console, epochs, run_path):
    if quiet:
        return None
    from mlplab.cli.progress import ConsoleProgress
    from mlplab.runs.folder import open_run

    run = open_run(run_path)
    total = epochs or int(run.config["train"]["epochs"])
    return ConsoleProgress(total, console, show_lr=run.config["train"].get("schedule", "constant") != "constant")


def _report_training(result, console, quiet):
    h = result.history
    if result.interrupted_at is not None:
        epoch, batch = result.interrupted_at
        done = h.epochs_done
        saved = f"{done} whole epoch{'' if done == 1 else 's'} {'is' if done == 1 else 'are'} saved"
        how = "interrupted" if result.stop_signal in (None, signal.SIGINT) else \
            f"terminated by {signal.Signals(result.stop_signal).name}"
        click.echo(f"mlplab: {how} in epoch {epoch} after batch {batch}; {saved}. "
                   f"Continue with: {resume_command(result.path, result.target_epochs)}", err=True)
        raise SystemExit(signal_exit_code(result.stop_signal))
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
    from mlplab.runs.folder import open_run
    from mlplab.runs.lock import run_lock
    from mlplab.runs.session import evaluate_model

    r = open_run(run)
    model = r.model()
    if data is None:
        ds, name = r.dataset(), r.config["data"]["name"]
    else:
        ds, name = load_dataset(data), data
    target = r.path / ("metrics.json" if data is None else "metrics-" + _slug(name) + ".json")
    with run_lock(r.path, "evaluate"):  # one writer per run folder
        metrics = evaluate_model(model, ds, loss=r.config["train"].get("loss", "categorical_crossentropy"),
                                 data_name=name)
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
    # titles as lines of their own: a table's title is wrapped to the table's width
    console.print("Per class")
    table = Table()
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in m["per_class"]:
        table.add_row(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      f"{row['support']:,}")
    console.print(table)
    names = m["class_names"]
    console.print("Confusion matrix (rows: true, columns: predicted)")
    cm = Table()
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
    if run is not None and input_dim is not None:  # a run knows its input size; a flag it ignored would mislead
        raise MlplabError("--input goes with --model SPEC; a RUN's input size comes from the run")
    if spec is not None:
        if input_dim is None or input_dim <= 0:
            raise MlplabError("--model needs --input N, the number of input features (e.g. 784), N >= 1")
        model = build(spec, input_dim)
    else:
        from mlplab.runs.folder import open_run

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

    import functools

    from mlplab.data.imagefolder import border_background
    from mlplab.data.inputs import load_image
    from mlplab.runs.folder import open_run
    from mlplab.train.metrics import class_probabilities
    from mlplab.train.predict import predict as predict_proba

    r = open_run(run)
    model = r.model()
    shape = tuple(r.config["data"].get("input_shape") or [r.config["model"]["input_dim"]])
    background = functools.cache(lambda: border_background(r.dataset().x_train))  # only for transparent images
    notes: list[str] = []
    batch = np.stack([load_image(f, shape, invert=invert, background=background, notes=notes) for f in files])
    for note in notes:
        click.echo(f"mlplab: note: {note}", err=True)
    proba = class_probabilities(predict_proba(model, batch))  # a one-unit sigmoid: two classes
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
