"""`mlplab report RUN` and `mlplab compare RUN RUN...`: thin shells over mlplab.runs.report / compare_page."""

from __future__ import annotations

from pathlib import Path

import click

from mlplab.errors import MlplabError


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--mistakes", "n_mistakes", type=click.IntRange(0, 200), default=24, show_default=True,
              help="How many of the most confident test mistakes to show.")
@click.option("--samples", "samples_per_class", type=click.IntRange(1, 30), default=10, show_default=True,
              help="Sample images per class in the data section.")
@click.option("--title", help="Report title (default: the run folder's name).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write report.html and plots/ into this folder instead of RUN (RUN is only read).")
@click.option("--maps", "maps", multiple=True, metavar="PATTERN",
              help="Include only the maps whose file name (without extension) matches, e.g. 'dense_2-*' "
                   "(repeatable; default: every map).")
@click.option("--no-maps", is_flag=True, help="Include no hidden-feature maps (a small report).")
@click.option("--maps-from", "maps_dir", type=click.Path(path_type=Path),
              help="Read the maps from this folder (where `mlplab embed --out` wrote them) instead of RUN/embeddings.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the report's path.")
def report(run_dir, n_mistakes, samples_per_class, title, out_dir, maps, no_maps, maps_dir, quiet):
    """Write RUN/plots/*.png|svg and the self-contained RUN/report.html, then print its path."""
    from mlplab.runs.folder import open_run
    from mlplab.runs.report import write_run_report

    if no_maps and maps:
        raise MlplabError("--no-maps and --maps contradict each other; give one")
    result = write_run_report(open_run(run_dir), n_mistakes=n_mistakes, samples_per_class=samples_per_class,
                              title=title, out_dir=out_dir, maps=[] if no_maps else (list(maps) or None),
                              maps_dir=maps_dir)
    if not quiet:
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        for name, paths in result.plots.items():
            click.echo(f"{name:>10}: {paths['png']}  {paths['svg'].name}")
    click.echo(str(result.report))


@click.command()
@click.argument("run_dirs", metavar="RUN RUN...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="Folder for compare.png, compare.svg and compare.html.")
@click.option("--names", help="Comma-separated display names, one per run (default: folder names).")
@click.option("--title", default="Run comparison", show_default=True, help="Figure and page title.")
def compare(run_dirs, out, names, title):
    """Overlay several runs' learning curves and print their best validation and test metrics."""
    from mlplab.runs.folder import open_run
    from mlplab.runs.compare import write_comparison

    if len(run_dirs) < 2:
        raise MlplabError("compare needs at least two runs")
    name_list = [n.strip() for n in names.split(",")] if names else None
    result = write_comparison([open_run(p) for p in run_dirs], out, name_list, title=title)
    _print_table(result.rows)
    click.echo(f"Wrote {result.png}, {result.svg.name} and {result.html.name}")


def _print_table(rows) -> None:
    from rich.markup import escape

    from mlplab.cli.console import make_console
    from rich.table import Table

    from mlplab.viz.report import fmt_loss, fmt_num, fmt_pct

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col, justify in (("run", "left"), ("epochs", "right"), ("best epoch", "right"), ("best val loss", "right"),
                         ("val acc", "right"), ("test loss", "right"), ("test acc", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    best_test = max((r["test_accuracy"] for r in rows if r["test_accuracy"] is not None), default=None)
    for r in rows:
        test_acc = fmt_pct(r["test_accuracy"])
        if best_test is not None and r["test_accuracy"] == best_test:
            test_acc = f"[bold]{test_acc}[/bold]"
        table.add_row(escape(r["name"]), fmt_num(r["epochs"]), fmt_num(r["best_epoch"]), fmt_loss(r["best_val_loss"]),
                      fmt_pct(r["best_val_accuracy"]), fmt_loss(r["test_loss"]), test_acc)
    make_console().print(table)
