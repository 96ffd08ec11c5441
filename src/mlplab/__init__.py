"""mlplab: train fully-connected networks (MLPs) and see what they learned.

The public API is re-exported here lazily, so that `import mlplab` (and `mlplab --help`) does not pay for
importing torch, scikit-learn or Bokeh until a function that needs them is called.
"""

from __future__ import annotations

import importlib

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
    "activations": "mlplab.inspect",
    "embed": "mlplab.inspect",
    "quality": "mlplab.inspect",
}

__all__ = ["MlplabError", "__version__", *_EXPORTS]


def __getattr__(name: str):
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
