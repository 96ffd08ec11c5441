"""`mlplab activations` and `mlplab embed`: thin shells over mlplab.runs.maps."""

from __future__ import annotations

import click

from mlplab.inspect.embed import METHODS

SPLITS = click.Choice(["train", "val", "test"])


@click.command(help="Export hidden-layer activations of a run to .npz (with labels, predictions, "
                    "confidences and sample indices).")
@click.argument("run_dir", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--layer", default="all", show_default=True,
              help="Layer name, comma-separated names, or 'all' (every dense layer).")
@click.option("--split", type=SPLITS, default="test", show_default=True)
@click.option("--n", "n", type=int, default=None, help="Number of samples (seeded draw); default: the whole split.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output .npz; default RUN/activations-<split>.npz.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample draw.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4096, show_default=True)
def activations(run_dir, layer, split, n, out, seed, batch_size):
    from pathlib import Path

    from mlplab.runs.maps import export_activations
    from mlplab.runs.folder import open_run

    run = open_run(run_dir)
    out = Path(out) if out else run.path / f"activations-{split}.npz"
    path, names, count = export_activations(run, out, layers=layer, split=split, n=n, seed=seed,
                                            batch_size=batch_size)
    click.echo(f"{count:,} samples of the {split} split, layers {', '.join(names)}")
    click.echo(str(path))


@click.command(help=f"Map hidden features to 2-D ({', '.join(m.title for m in METHODS.values())}); writes "
                    "RUN/embeddings/<layer>-<method>[-<split>][-n<N>][-seed<S>].{npz,json,png,html} (the split when "
                    "not test, n and seed when not the defaults) and prints quality scores.")
@click.argument("run_dir", type=click.Path(file_okay=True, dir_okay=True))
@click.option("--layer", default=None,
              help="Layer name (e.g. dense_2), 'input', comma-separated names, or 'all' (input, every hidden "
                   "layer and the output, in linked panels). Default: the last hidden layer.")
@click.option("--method", type=click.Choice(list(METHODS)), default="tsne", show_default=True,
              help="; ".join(f"{m.name}: {m.description}" for m in METHODS.values()) + ".")
@click.option("--n", "n", type=int, default=None, help="Number of samples (seeded draw); default: up to 10,000.")
@click.option("--split", type=SPLITS, default="test", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample draw and the method.")
@click.option("--no-html", is_flag=True, help="Skip the interactive page.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write the maps into this folder instead of RUN/embeddings (RUN is only read); "
                   "`mlplab report RUN --maps-from DIR` puts them in a report.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the written paths.")
def embed(run_dir, layer, method, n, split, seed, no_html, out_dir, quiet):
    from mlplab.runs.maps import embed_run
    from mlplab.runs.folder import open_run

    run = open_run(run_dir)
    result = embed_run(run, layer=layer, method=method, n=n, split=split, seed=seed, write_html=not no_html,
                       out_dir=out_dir)
    if not quiet:
        click.echo(f"{method} of {result.n:,} {split} samples")
        click.echo(format_table(result))
    for kind in ("png", "html", "npz", "json"):
        if kind in result.paths:
            click.echo(str(result.paths[kind]))


def format_table(result) -> str:
    def num(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    rows = [("layer", "10-NN acc", "trust", "seconds")]
    for m in result.maps:
        rows.append((m.layer, num(m.quality["knn_accuracy"], ".3f"), num(m.quality["trustworthiness"], ".3f"),
                     f"{m.embedding.seconds:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    notes = [f"  {m.layer}: {m.embedding.note}" for m in result.maps if m.embedding.note]
    return "\n".join(lines + notes)
