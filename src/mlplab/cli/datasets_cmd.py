"""`mlplab datasets`: list the named datasets, `show` one (or a file), `fetch` one ahead of time."""

from __future__ import annotations

from pathlib import Path

import click

from mlplab.errors import MlplabError


def _console():
    from mlplab.cli.console import make_console

    return make_console()


class DownloadBar:
    """The library's progress callback drawn as rich progress bars, one per file; started on first use."""

    def __init__(self, console):
        self.console = console
        self.progress = None
        self.tasks: dict[str, int] = {}

    def __call__(self, filename: str, done: int, total: int | None) -> None:
        if self.progress is None:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), console=self.console)
            self.progress.start()
        if filename not in self.tasks or done == 0:  # done == 0: a new attempt, perhaps from the next mirror
            if filename in self.tasks:
                self.progress.reset(self.tasks[filename], total=total)
            else:
                self.tasks[filename] = self.progress.add_task(filename, total=total)
        self.progress.update(self.tasks[filename], completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _named_or_fail(name: str):
    from mlplab.data import sources

    key = sources.canonical(name)
    if key is None:
        raise MlplabError(f"unknown dataset {name!r}; choose one of: {', '.join(sources.NAMED)}")
    return sources.NAMED[key]


def _where(named, data_dir) -> tuple[str, str]:
    """(status, detail) of where a named dataset would load from now, without reading it."""
    from mlplab.data import sources

    if named.bundled:
        return "bundled", "ships with scikit-learn"
    place, _ = sources.locate(named.name, data_dir)
    if place is None:
        return "download needed", ""
    return place.kind, str(place.path)


def _list(data_dir) -> None:
    from rich.table import Table

    from mlplab.data import sources

    console = _console()
    table = Table(title="Named datasets", title_justify="left")
    for col, kw in (("name", {"style": "bold", "no_wrap": True}), ("description", {}),
                    ("train", {"justify": "right"}), ("test", {"justify": "right"}),
                    ("classes", {"justify": "right"}), ("loads from now", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for named in sources.NAMED.values():
        status, detail = _where(named, data_dir)
        table.add_row(named.name, named.title, f"{named.n_train:,}", f"{named.n_test:,}", str(named.n_classes),
                      f"{status}\n[dim]{detail}[/dim]" if detail else status)
    console.print(table)
    for named in sources.NAMED.values():
        console.print(f"[bold]{named.name}[/bold] classes: {', '.join(named.class_names)}")
    console.print(f"Downloads go to {sources.locations.cache_dir()}", markup=False)
    console.print("Paths work too: a .npz, a .csv, a folder of IDX files, or a folder of CLASS_NAME/ image folders.")


@click.group(invoke_without_command=True)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Your own data folder (default $MLPLAB_DATA).")
@click.pass_context
def datasets(ctx, data_dir):
    """List the named datasets and where each would load from now."""
    if ctx.invoked_subcommand is None:
        _list(data_dir)


@datasets.command()
@click.argument("name_or_path")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Your own data folder (default $MLPLAB_DATA).")
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="Test share for data that has no test part.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of that test split.")
@click.option("--download/--no-download", default=True, help="Download a named dataset that is not here.")
def show(name_or_path, data_dir, test_fraction, seed, download):
    """Shapes, class counts, pixel range and source of a dataset (name or path)."""
    import numpy as np
    from rich.table import Table

    from mlplab.data import load_dataset

    console = _console()
    bar = DownloadBar(console)
    try:
        ds = load_dataset(name_or_path, data_dir=data_dir, download=download, test_fraction=test_fraction,
                          seed=seed, progress=bar)
    finally:
        bar.close()
    shape = "x".join(str(d) for d in ds.input_shape)
    console.print(f"[bold]{ds.name}[/bold]: {ds.n_classes} classes, inputs {shape} ({ds.input_dim} features)")
    console.print(f"source: {ds.source}", markup=False)
    splits = Table(title="Splits", title_justify="left")
    for col in ("split", "samples", "shape", "dtype", "pixel range"):
        splits.add_column(col, justify="right" if col == "samples" else "left")
    for split, x in (("train", ds.x_train), ("test", ds.x_test)):
        low, high = (x.min(), x.max()) if x.size else (0, 0)
        splits.add_row(split, f"{len(x):,}", str(x.shape), str(x.dtype), f"{low:g} .. {high:g}")
    console.print(splits)
    counts = Table(title="Samples per class", title_justify="left")
    for col in ("label", "class", "train", "test"):
        counts.add_column(col, justify="left" if col == "class" else "right")
    train = np.bincount(ds.y_train, minlength=ds.n_classes)
    test = np.bincount(ds.y_test, minlength=ds.n_classes)
    for i, name in enumerate(ds.class_names):
        counts.add_row(str(i), name, f"{train[i]:,}", f"{test[i]:,}")
    console.print(counts)


@datasets.command()
@click.argument("name")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Your own data folder (default $MLPLAB_DATA).")
@click.option("--mirror", "mirrors", multiple=True, help="Base URL to download from instead of the built-in mirrors "
                                                        "(repeatable; also $MLPLAB_MIRRORS).")
def fetch(name, data_dir, mirrors):
    """Download a named dataset into mlplab's cache ahead of time (nothing happens if it is already here)."""
    from mlplab.data import sources

    named = _named_or_fail(name)
    console = _console()
    if named.bundled:
        console.print(f"{named.name}: ships with scikit-learn; nothing to download")
        return
    bar = DownloadBar(console)
    try:
        place, _ = sources.fetch_named(named.name, data_dir=data_dir, mirrors=list(mirrors) or None, progress=bar)
    finally:
        bar.close()
    # Read it once: this verifies digests and structure now rather than at the first training run.
    ds = sources.load_named(named.name, data_dir=data_dir, download=False)
    console.print(f"{named.name}: ready, {len(ds.y_train):,} training and {len(ds.y_test):,} test samples "
                  f"({place.describe()})", markup=False)
