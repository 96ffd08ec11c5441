"""`mlplab run FILE.toml`: an experiment file's stages end to end."""

from __future__ import annotations

from pathlib import Path

import click

from mlplab.cli.notes import note_cpu_kernels


@click.command()
@click.argument("experiment_file", metavar="FILE.toml", type=click.Path(path_type=Path))
@click.option("--data", help="Run on this dataset (name or path) instead of the file's.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (default: runs/<experiment name>).")
@click.option("--overwrite", is_flag=True, help="Replace the experiment's earlier runs in --out.")
@click.option("--quiet", "-q", is_flag=True, help="Only stage summaries, no per-epoch lines.")
def run(experiment_file, data, out, overwrite, quiet):
    """Run the stages of an experiment file (train, continue, embed, report, compare) in order."""
    from rich.console import Console

    from mlplab.runs.experiment import load_experiment, run_experiment

    console = Console(highlight=False)
    exp = load_experiment(experiment_file, data=data)
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
        console.print(f"[green]done[/green] {result.summary}")

    results = run_experiment(exp, out, overwrite=overwrite, callbacks_for=callbacks_for, on_stage=on_stage,
                             on_stage_done=on_stage_done)
    last = results[-1]
    if last.stage.kind in ("train", "continue") and "interrupted" in last.summary:
        click.echo(f"mlplab: experiment interrupted at {last.stage.where}; rerun it with --overwrite", err=True)
        raise SystemExit(130)
    pages = [p for r in results for p in r.paths if p.suffix == ".html"]
    console.rule("[bold]finished[/bold]", align="left")
    for page in pages:
        console.print(f"report: {page}")
