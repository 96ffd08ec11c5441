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
    "dynamics": "mlplab.runs.dynamics",
    "Snapshots": "mlplab.train.snapshots",
    "activations": "mlplab.inspect",
    "embed": "mlplab.inspect",
    "quality": "mlplab.inspect",
}

__all__ = ["MlplabError", "__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlplab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next access is a plain attribute lookup
    return value


def __dir__():
    return sorted(__all__)
