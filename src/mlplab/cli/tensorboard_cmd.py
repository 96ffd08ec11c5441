"""`mlplab tensorboard RUN...`: finished runs written as TensorBoard logs, one TensorBoard run each."""

from __future__ import annotations

from pathlib import Path

import click

from mlplab.errors import MlplabError


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "log_dir", type=click.Path(path_type=Path), default=Path("tensorboard"), show_default=True,
              help="Log folder: each run goes to OUT/<run name>.")
@click.option("--n", "n", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="Test samples in the Embedding Projector (seeded).")
@click.option("--layers", default="all", show_default=True,
              help="Layers in the projector: all, or names joined by + (e.g. dense_1+dense_2).")
def tensorboard(runs, log_dir, n, layers):
    """Export runs (history, weight histograms, hyper-parameters, summary, projector) for TensorBoard."""
    from mlplab.runs.folder import open_run
    from mlplab.runs.tensorboard import export_run

    opened = [open_run(r) for r in runs]  # every run checked before anything is written
    names = [r.name for r in opened]
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise MlplabError(f"runs share a folder name ({', '.join(twice)}); each becomes OUT/<name>: export them "
                          "to different --out folders")
    chosen = "all" if layers == "all" else layers.split("+")
    for run in opened:
        target = export_run(run, log_dir, n=n, layers=chosen)
        click.echo(f"{run.path} -> {target}")
    click.echo(f"View with: tensorboard --logdir {log_dir}")
