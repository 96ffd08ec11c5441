"""`mlplab dynamics RUN`: aligned maps of a run's training snapshots, drawn under RUN/dynamics/."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["tsne", "umap", "pca"]), default="tsne", show_default=True,
              help="How each epoch is mapped to 2-D; every map starts from (or is aligned to) the previous epoch's.")
@click.option("--layer", "layers", multiple=True, help="A snapshot layer to map (repeat for several; default: all).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Seed of the maps.")
@click.option("--no-gif", is_flag=True, help="Skip the animated GIF.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def dynamics(run, method, layers, seed, no_gif, quiet):
    """Watch the network learn: hidden-layer maps of the validation sample at every snapshot, aligned across
    epochs, as an interactive page (RUN/dynamics/index.html), a GIF, and separability and statistics curves.
    The run must have been trained with --snapshots."""
    from rich.table import Table

    from mlplab.cli.console import make_console

    from mlplab.runs.dynamics import METHOD_TITLES, write_dynamics

    start = time.perf_counter()
    result = write_dynamics(run, method, list(layers) or None, seed=seed, gif=not no_gif)
    if quiet:
        return
    console = make_console()
    table = Table(title=f"{METHOD_TITLES[method]} dynamics of {run} ({len(result.epochs)} snapshots, "
                        f"{len(result.series.labels)} points, {time.perf_counter() - start:.1f} s)",
                  title_justify="left")
    for col in ("layer", "epochs", "10-NN in layer", "10-NN in map", "trust (last)", "mean disparity"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for row in result.summary_rows():
        table.add_row(*row)
    console.print(table)
    for key in ("page", "gif", "separability", "stats", "scores"):
        if key in result.files:
            console.print(f"  {result.files[key]}")
    console.print(f"Add them to the report with: mlplab report {run}")
