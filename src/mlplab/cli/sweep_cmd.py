"""`mlplab sweep`: an Optuna search over the training options (runs/sweep.py), its status, page and winner."""

from __future__ import annotations

import math
from pathlib import Path

import click


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_status(status: dict) -> None:
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(status["counts"].items())) or "no trials yet"
    click.echo(f"{sum(status['counts'].values())} trials: {counts}; objective {status['objective']} "
               f"({status['direction']})")
    for r in status["rows"]:
        params = " ".join(f"{k}={_fmt(v)}" for k, v in r["params"].items())
        extra = f"  [{r['reason']}]" if r["reason"] else ""
        click.echo(f"  {r['number']:>4}  {r['state']:<11} {_fmt(r['value']):>8}  {params}{extra}")
    best = status["best"]
    if best:
        click.echo(f"best: trial {best['number']} {status['objective']} {_fmt(best['value'])}, test accuracy "
                   f"{_fmt(best['test_accuracy'])}  ({best['run']})")


@click.command()
@click.argument("sweep_file", metavar="SWEEP.toml", required=False, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Sweep folder: study.db, trials/, sweep.html.")
@click.option("--data", help="Dataset name or path for every trial (overrides the file's).")
@click.option("--trials", type=click.IntRange(min=1), help="Trials in the study in all (default: the file's); "
              "running again continues up to this many.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes sharing the study (CPU threads split between them).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads per trial (default: CPUs / workers).")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Run the trials as Ray tasks on this cluster "
              "(HOST:PORT of `ray start --head`, or auto).")
@click.option("--export", "export_file", type=click.Path(path_type=Path),
              help="Write the best trial as a `mlplab train --config` file.")
@click.option("--status", "status_dir", type=click.Path(path_type=Path), help="Show the trials of a sweep folder "
              "(while it runs, too) and exit.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def sweep(sweep_file, out, data, trials, workers, threads, ray_address, export_file, status_dir, quiet):
    """Search the training options with Optuna (TPE, pruning) and write DIR/sweep.html.

    Without SWEEP.toml, --out DIR --export FILE writes the winner of an existing sweep."""
    from mlplab.errors import MlplabError
    from mlplab.runs import sweep as sw

    if status_dir is not None:
        _print_status(sw.sweep_status(status_dir))
        return
    if out is None:
        raise MlplabError("--out DIR is required (the sweep folder)")
    echo = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    if sweep_file is not None:
        from mlplab.runs.sweep_space import load_sweep

        spec = load_sweep(sweep_file)
        note = lambda m: click.echo(f"mlplab: note: {m}", err=True)  # noqa: E731
        try:
            if ray_address:
                from mlplab.runs.sweep_ray import run_sweep_ray

                run_sweep_ray(spec, out, address=ray_address, trials=trials, data=data, threads=threads,
                              on_event=note)
            else:
                sw.run_sweep(spec, out, trials=trials, workers=workers, data=data, threads=threads, on_event=note)
        except KeyboardInterrupt:
            _write_page(out, echo)
            click.echo(f"mlplab: sweep interrupted; continue it with the same command "
                       f"(mlplab sweep {sweep_file} --out {out} ...)", err=True)
            raise SystemExit(130)
        _write_page(out, echo)
        if not quiet:
            _print_status(sw.sweep_status(out))
    elif export_file is None:
        raise MlplabError("give SWEEP.toml to run a sweep, --status DIR, or --out DIR --export FILE.toml")
    if export_file is not None:
        best = sw.export_best(out, export_file)
        echo(f"best trial {best['number']} written to {export_file}: mlplab train --config {export_file} --out RUN")


def _write_page(out, echo) -> None:
    from mlplab.runs.sweep_page import write_sweep_page

    echo(f"page: {write_sweep_page(out)}")
