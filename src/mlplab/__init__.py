"""mlplab: train fully-connected networks (MLPs) and see what they learned.

The public API is re-exported here lazily, so that `import mlplab` (and `mlplab --help`) does not pay for
importing torch, scikit-learn or Bokeh until a function that needs them is called.
"""

from __future__ import annotations

import importlib
import sys

from mlplab.errors import MlplabError

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_dataset": "mlplab.data",
    "Dataset": "mlplab.data",
    "train_val_split": "mlplab.data",
    "to_features": "mlplab.data",
    "build": "mlplab.model",
    "parse_spec": "mlplab.model",
    "MLP": "mlplab.model",
    "summary": "mlplab.model",
    "layer_configs": "mlplab.model",
    "fit": "mlplab.train",
    "evaluate": "mlplab.train",
    "predict": "mlplab.train",
    "History": "mlplab.train",
    "EarlyStopping": "mlplab.train",
    "Callback": "mlplab.train",
    "LambdaCallback": "mlplab.train",
    "Trainer": "mlplab.train",
    "TrainingDiverged": "mlplab.train",
    "open_run": "mlplab.runs.folder",
    "from_keras": "mlplab.runs.keras_import",
    "TensorBoard": "mlplab.runs.tensorboard",
    "MLflowLogger": "mlplab.runs.mlflow_logger",
    "dynamics": "mlplab.runs.dynamics",
    "Snapshots": "mlplab.train.snapshots",
    "activations": "mlplab.inspect",
    "embed": "mlplab.inspect",
    "quality": "mlplab.inspect",
    "Metrics": "mlplab.train.metrics",
    "MLPClassifier": "mlplab.train.estimator",
    "report": "mlplab.runs.api",
    "compare": "mlplab.runs.api",
    "embed_run": "mlplab.runs.api",
    "TerminateOnNaN": "mlplab.train.callbacks",
    "ReduceLROnPlateau": "mlplab.train.callbacks",
    "CSVLogger": "mlplab.runs.callbacks",
    "ModelCheckpoint": "mlplab.runs.callbacks",
    "plot_history": "mlplab.viz.notebook",
    "plot_embedding": "mlplab.viz.notebook",
    "explore": "mlplab.viz.notebook",
}

__all__ = ["MlplabError", "__version__", "register_display", "train", *_EXPORTS]


def _train_function(*args, **kwargs):
    """What calling `mlplab.train(...)` runs (see mlplab/train/__init__.py): the run layer's train."""
    return importlib.import_module("mlplab.runs.api").train(*args, **kwargs)


def __getattr__(name: str):
    if name == "train":  # the subpackage, which is also callable as mlplab.train(...)
        return importlib.import_module("mlplab.train")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlplab' has no attribute {name!r}")
    value = _guard(getattr(importlib.import_module(module), name), name)
    globals()[name] = value  # cache: the next access is a plain attribute lookup
    return value


def _guard(value, name: str):
    """Bad input to a public function or constructor raises MlplabError (errors.api_boundary). Functions are
    wrapped; classes keep their identity (isinstance, subclassing) and get a wrapped __init__."""
    from mlplab.errors import api_boundary

    if isinstance(value, type):
        init = value.__dict__.get("__init__")
        if not issubclass(value, BaseException) and init is not None and not getattr(init, "__mlplab_boundary__", 0):
            value.__init__ = api_boundary(init, name)
        return value
    return api_boundary(value, name) if callable(value) else value


def __dir__():
    return sorted(__all__)


# Inline display in Jupyter. History, Metrics and MLP live below viz/, which draws them, and may not import it
# (tests/test_layers.py). Rather than a display-hook registry in the lower layers that a higher one fills in,
# the facade registers IPython formatters by type *name*: no lower module changes, neither the types nor viz
# is imported until an object is actually shown, and a plain Python session pays nothing.
# (type's module, type name) -> (module of the renderer, function returning HTML)
_HTML_DISPLAY = {
    ("mlplab.train.history", "History"): ("mlplab.viz.notebook", "history_html"),
    ("mlplab.train.metrics", "Metrics"): ("mlplab.viz.notebook", "metrics_html"),
    ("mlplab.model.mlp", "MLP"): ("mlplab.viz.notebook", "model_html"),
}


def _renderer(module: str, name: str):
    def render(obj):
        return getattr(importlib.import_module(module), name)(obj)
    return render


def register_display(shell=None) -> bool:
    """Register the HTML formatters with an IPython shell (the running one by default); False without one.

    Called on import; call it yourself only if IPython started after mlplab was imported.
    """
    if shell is None:
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return False
    formatter = shell.display_formatter.formatters["text/html"]
    for (module, name), (where, fn) in _HTML_DISPLAY.items():
        formatter.for_type_by_name(module, name, _renderer(where, fn))
    # Our figures are plain matplotlib Figures (not pyplot's), which IPython shows only once matplotlib-inline
    # has registered its PNG formatter (it does so when pyplot is imported). Until then, draw them ourselves;
    # matplotlib-inline, when it comes, replaces this with its own.
    png = shell.display_formatter.formatters["image/png"]
    figure = ("matplotlib.figure", "Figure")
    if figure not in png.deferred_printers and not any(
            (getattr(t, "__module__", None), getattr(t, "__name__", None)) == figure for t in png.type_printers):
        png.for_type_by_name(*figure, _renderer("mlplab.viz.figures", "figure_bytes"))
    return True


register_display()
