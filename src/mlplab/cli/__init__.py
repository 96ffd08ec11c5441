"""The command line: the only place that parses argv, prints and exits.

Each verb lives in its own module under mlplab.cli and is imported only when it is invoked, so that
`mlplab --help` answers instantly (no torch import). Every MlplabError becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading

import click

from mlplab.errors import MlplabError, Terminated

# verb -> (module, attribute, one-line help shown by `mlplab --help`)
COMMANDS = {
    "datasets": ("mlplab.cli.datasets_cmd", "datasets", "List, inspect and download datasets."),
    "train": ("mlplab.cli.train_cmd", "train", "Train an MLP and write a run directory."),
    "evaluate": ("mlplab.cli.train_cmd", "evaluate", "Test loss, accuracy, per-class metrics, confusion matrix."),
    "summary": ("mlplab.cli.train_cmd", "summary", "Keras-style summary table of a run or a spec."),
    "predict": ("mlplab.cli.train_cmd", "predict", "Classify image files with a trained run."),
    "activations": ("mlplab.cli.inspect_cmd", "activations", "Export hidden-layer activations to .npz."),
    "embed": ("mlplab.cli.inspect_cmd", "embed", "Map hidden features to 2-D, with plots (methods: mlplab embed -h)."),
    "report": ("mlplab.cli.report_cmd", "report", "Write a self-contained HTML report of a run."),
    "compare": ("mlplab.cli.report_cmd", "compare", "Overlay several runs' learning curves and metrics."),
    "run": ("mlplab.cli.run_cmd", "run", "Run an experiment file (TOML) end to end."),
    "import": ("mlplab.cli.io_cmd", "import_", "Turn a trained Keras MLP (.keras/.h5) into a run directory."),
    "export": ("mlplab.cli.io_cmd", "export", "Export a run's model to ONNX, TorchScript or Keras."),
    "sweep": ("mlplab.cli.sweep_cmd", "sweep", "Search training options with Optuna (locally or on Ray); sweep.html."),
    "tensorboard": ("mlplab.cli.tensorboard_cmd", "tensorboard", "Export finished runs as TensorBoard logs."),
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


# SIGTERM (kill, systemd, Docker, schedulers) and SIGHUP (a closed terminal) end a command like Ctrl-C: an
# exception, so that `finally` blocks and temporary-file cleanup run, then one line and exit 128 + the signal's
# number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP), as a shell reports a process a signal ended.
# `train`, `resume` and `run` go further while training: the batch finishes and the run is saved first.
_TERMINATING = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _terminate(signum, frame):
    raise Terminated(signum)


def signal_exit_code(signum: int | None) -> int:
    return 128 + int(signum or signal.SIGINT)


def main(argv=None) -> None:
    """Entry point: run the CLI, turning user errors into one line and exit code 2."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _terminate) for s in _TERMINATING} if in_main_thread else {}
    try:
        rv = cli.main(args=argv, prog_name="mlplab", standalone_mode=False)
    except Terminated as exc:
        error_line(f"terminated by {signal.Signals(exc.signum).name}")
        sys.exit(signal_exit_code(exc.signum))
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
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
    sys.exit(rv if isinstance(rv, int) else 0)
