"""`mlplab import` (a Keras model file -> a run folder) and `mlplab export` (a run -> ONNX, TorchScript, Keras)."""

from __future__ import annotations

from pathlib import Path

import click

from mlplab.errors import MlplabError


@click.command("import")
@click.argument("model_file", type=click.Path(path_type=Path))
@click.option("--data", help="The dataset the model was trained on (name or path); its test split is scored.")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory to create.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory at --out.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def import_(model_file, data, out, overwrite, quiet):
    """Turn a trained Keras MLP (.keras or legacy .h5) into a run directory (no Keras needed).

    Supported layers: InputLayer, Flatten, Dense, Dropout, Activation. Nothing in the file is executed.
    """
    from mlplab.runs.keras_import import import_keras

    if data is None:
        raise MlplabError("--data is required: the dataset (name or path) the model was trained on")
    if out is None:
        raise MlplabError("--out RUN_DIR is required: the run directory to create")
    result = import_keras(model_file, data=data, out=out, overwrite=overwrite)
    if quiet:
        return
    for note in result.notes:
        click.echo(f"note: {note}")
    m = result.metrics
    click.echo(f"Imported {model_file} as {result.spec}")
    click.echo(f"Test accuracy: {m['test_accuracy']:.4f} (loss {m['test_loss']:.4f}) on {m['n_test']:,} samples")
    click.echo(f"Run saved to {result.path}")


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True, help="onnx (opset 17), torchscript or keras.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="File to write (.onnx, .pt, .keras).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def export(run, fmt, out, quiet):
    """Export a run's model to ONNX, TorchScript or a Keras 3 .keras file."""
    from mlplab.runs.export import export_run

    result = export_run(run, fmt, out)
    if not quiet:
        click.echo(f"Wrote {result.path}: {result.description}")
