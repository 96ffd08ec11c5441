"""Python = CLI: mlplab.train(...) writes the run folder `mlplab train` writes and returns it as a Run.

Both go through the same session (runs/session.py train_run) with options from the one table
(train/options.py TrainOptions), so a run made from a notebook can be reported, compared, embedded or resumed
from the command line and the other way round. A run shows itself inline as a card with its curves.
"""

from __future__ import annotations

from pathlib import Path

from mlplab.errors import MlplabError
from mlplab.runs.folder import Run, open_run


def train(data: str | None = None, out=None, *, overwrite: bool = False, verbose="auto", callbacks=(),
          **options) -> Run:
    """Train as `mlplab train --data DATA --out OUT ...` does; keyword options are TrainOptions' keys (`mlplab
    train`'s flags with underscores: model, epochs, lr, batch_size, val_split, early_stop, seed, ...)."""
    from mlplab.runs.session import train_run
    from mlplab.train.options import TrainOptions
    from mlplab.train.progress import progress_callback, resolve_verbose

    if out is None:
        raise MlplabError("train needs out=RUN_DIR: the folder the run is written to")
    resolve_verbose(verbose)
    if data is not None:
        options["data"] = data
    opts = TrainOptions.from_mapping(options, where="train")  # unknown keys: one line listing the allowed ones
    progress = progress_callback(verbose, opts.epochs, show_lr=opts.schedule != "constant")
    result = train_run(opts, Path(out), overwrite=overwrite,
                       callbacks=[*callbacks, *([progress] if progress else [])])
    return open_run(result.path)  # the Run shows itself inline as a card


def run_html(opened: Run) -> str:
    """The run's summary card: name, data, model, settings, headline metrics, curves, links to its files."""
    from mlplab.viz.figures import png_data_uri
    from mlplab.viz.notebook import CARD_STYLE, esc, html_table, plot_history

    cfg = opened.config
    rows = opened.history().rows
    metrics = opened.metrics()
    train_cfg = cfg.get("train", {})
    facts = [("data", cfg["data"].get("name")), ("model", cfg["model"].get("spec")),
             ("optimizer", f"{train_cfg.get('optimizer')} lr {train_cfg.get('lr')}"),
             ("epochs", len(rows)), ("batch size", train_cfg.get("batch_size")), ("seed", train_cfg.get("seed"))]
    if metrics:
        facts += [("test accuracy", f"{metrics['test_accuracy']:.4f}"), ("test loss", f"{metrics['test_loss']:.4f}")]
    curves = ""
    if rows:
        curves = f'<img alt="learning curves" style="max-width:100%" src="{png_data_uri(plot_history(rows), dpi=72)}">'
    files = [p.name for p in sorted(opened.path.iterdir()) if p.is_file() and p.suffix in (".json", ".csv", ".txt",
                                                                                            ".html", ".safetensors")]
    links = " · ".join(f'<a href="{esc((opened.path / f).as_posix())}">{esc(f)}</a>' for f in files)
    return (f'<div style="{CARD_STYLE}"><b>Run</b> <code>{esc(opened.path)}</code>'
            f'{html_table(["", ""], facts)}{curves}<div style="color:#555">files: {links}</div></div>')


def _as_run(run) -> Run:
    return run if isinstance(run, Run) else open_run(run)


def report(run, **options) -> Path:
    """`mlplab report RUN` from Python: write the run's report.html and return its path. `run` is a Run or a
    path; options as write_run_report's (n_mistakes, samples_per_class, title, out_dir, maps)."""
    from mlplab.runs.report import write_run_report

    return write_run_report(_as_run(run), **options).report


def compare(runs, out, *, names=None, title: str = "Run comparison") -> Path:
    """`mlplab compare RUN RUN... --out OUT` from Python: runs are Run objects or paths; returns compare.html."""
    from mlplab.runs.compare import write_comparison

    if isinstance(runs, (str, Path, Run)):
        raise MlplabError("compare takes a list of runs (Run objects or paths), e.g. compare(['runs/a', 'runs/b'], "
                          "'runs')")
    return write_comparison([_as_run(r) for r in runs], Path(out), names, title=title).html


def embed_run(run, **options):
    """`mlplab embed RUN` from Python: maps of a run's layers written under RUN/embeddings (or out_dir), returned
    with their quality scores. For arrays, mlplab.embed(features, method) maps them directly."""
    from mlplab.runs.maps import embed_run as embed_a_run

    return embed_a_run(_as_run(run), **options)
