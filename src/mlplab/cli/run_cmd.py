"""`mlplab run FILE.toml`: an experiment file's stages end to end."""

from __future__ import annotations

from pathlib import Path

import click

from mlplab.cli.notes import note_cpu_kernels


@click.command()
@click.argument("experiment_file", metavar="FILE.toml", type=click.Path(path_type=Path))
@click.option("--data", help="Run on this dataset (name or path) instead of the file's.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (default: runs/<experiment name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key (repeatable): a training option (epochs=3) for every train stage, an embed key "
                   "(n=300) for every embed stage, or one place: defaults.lr=0.1, stage[5].n=300.")
@click.option("--overwrite", is_flag=True, help="Start again from scratch, replacing the experiment's runs in --out "
                                                "(without it, a stopped experiment continues where it stopped).")
@click.option("--quiet", "-q", is_flag=True, help="Only stage summaries, no per-epoch lines.")
def run(experiment_file, data, out, overrides, overwrite, quiet):
    """Run the stages of an experiment file (train, continue, embed, report, compare) in order.

    Running it again continues: stages already done are skipped, an interrupted one resumes."""
    import logging
    import shlex

    from mlplab.cli.train_cmd import _console
    from mlplab.runs.experiment import load_experiment, run_experiment

    # the library logs its warnings as well as returning them; they are printed below, once (as `train` does)
    logging.getLogger("mlplab").addHandler(logging.NullHandler())
    console = _console()
    exp = load_experiment(experiment_file, data=data, overrides=overrides)
    out = out or Path("runs") / exp.name
    total = len(exp.stages)
    trains = [st for st in exp.stages if st.kind == "train"]
    if trains and not quiet:
        note_cpu_kernels(trains[0].options["train"].device)

    def callbacks_for(stage):
        if quiet or stage.kind not in ("train", "continue"):
            return []
        from mlplab.cli.progress import ConsoleProgress

        epochs = stage.options["train"].epochs if stage.kind == "train" else stage.options["epochs"]
        return [ConsoleProgress(epochs, console)]

    def on_stage(index, stage):
        label = stage.options.get("name") or stage.options.get("run") or ""
        console.rule(f"[bold]stage {index}/{total}: {stage.kind}[/bold] {label}".rstrip(), align="left")
        if stage.options.get("note"):
            console.print(stage.options["note"], style="dim")

    def on_stage_done(result):
        for note in result.notes:
            click.echo(f"mlplab: note: {note}", err=True)
        for line in result.warnings:  # the loggers' (a tracking server that stopped answering): always shown
            click.echo(f"mlplab: warning: {line}", err=True)
        if result.skipped:
            console.print(f"[dim]skipped[/dim] {result.summary}")
        else:
            console.print(f"[green]done[/green] {result.summary}")

    results = run_experiment(exp, out, overwrite=overwrite, callbacks_for=callbacks_for, on_stage=on_stage,
                             on_stage_done=on_stage_done)
    last = results[-1]
    if last.stage.kind in ("train", "continue") and "interrupted" in last.summary:
        again = ["mlplab", "run", str(experiment_file)] + (["--data", data] if data else []) + ["--out", str(out)]
        for item in overrides:
            again += ["--set", item]
        click.echo(f"mlplab: experiment interrupted at {last.stage.where}; continue where it stopped with: "
                   f"{shlex.join(again)}", err=True)
        raise SystemExit(130)
    pages = [p for r in results for p in r.paths if p.suffix == ".html"]
    console.rule("[bold]finished[/bold]", align="left")
    for page in pages:
        console.print(f"report: {page}")
