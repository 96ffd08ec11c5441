"""The command line: the only place that parses argv, prints and exits.

Each verb lives in its own module under mlplab.cli and is imported only when it is invoked, so that
`mlplab --help` answers instantly (no torch import). Every MlplabError becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from mlplab.errors import MlplabError

# verb -> (module, attribute, one-line help shown by `mlplab --help`)
COMMANDS = {
    "datasets": ("mlplab.cli.datasets_cmd", "datasets", "List, inspect and download datasets."),
    "train": ("mlplab.cli.train_cmd", "train", "Train an MLP and write a run directory."),
    "evaluate": ("mlplab.cli.train_cmd", "evaluate", "Test loss, accuracy, per-class metrics, confusion matrix."),
    "summary": ("mlplab.cli.train_cmd", "summary", "Keras-style summary table of a run or a spec."),
    "predict": ("mlplab.cli.train_cmd", "predict", "Classify image files with a trained run."),
    "activations": ("mlplab.cli.inspect_cmd", "activations", "Export hidden-layer activations to .npz."),
    "embed": ("mlplab.cli.inspect_cmd", "embed", "Map hidden features to 2-D (t-SNE, UMAP, MDS, PCA) with plots."),
    "report": ("mlplab.cli.report_cmd", "report", "Write a self-contained HTML report of a run."),
    "compare": ("mlplab.cli.report_cmd", "compare", "Overlay several runs' learning curves and metrics."),
    "run": ("mlplab.cli.run_cmd", "run", "Run an experiment file (TOML) end to end."),
    "dynamics": ("mlplab.cli.dynamics_cmd", "dynamics", "Watch the network learn: aligned maps across epochs."),
}


class LazyGroup(click.Group):
    """A click group that imports a verb's module only when that verb runs."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        module, attr, _ = entry
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and name not in COMMANDS and not name.startswith("-"):
            raise click.UsageError(f"unknown command {name!r}; choose one of: {', '.join(COMMANDS)}")
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlplab", prog_name="mlplab")
def cli():
    """mlplab: train fully-connected networks (MLPs) and see what they learned."""


def error_line(message: str) -> None:
    click.echo(f"mlplab: error: {message}", err=True)


def main(argv=None) -> None:
    """Entry point: run the CLI, turning user errors into one line and exit code 2."""
    try:
        rv = cli.main(args=argv, prog_name="mlplab", standalone_mode=False)
    except MlplabError as exc:
        error_line(exc.message)
        sys.exit(2)
    except click.exceptions.Abort:
        error_line("interrupted")
        sys.exit(130)
    except click.ClickException as exc:
        # Usage errors (unknown option, bad value, missing argument): one line, exit 2, like MlplabError.
        error_line(" ".join(exc.format_message().split()))
        sys.exit(exc.exit_code if exc.exit_code != 1 else 2)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(130)
    except MemoryError:
        error_line("out of memory; use a smaller model, batch size or --n")
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
