"""Training: the fit loop, callbacks, history, optimizers and schedules, checkpoints, whole runs."""

from mlplab.train.callbacks import Callback, EarlyStopping, LambdaCallback
from mlplab.train.history import History
from mlplab.train.trainer import Trainer, TrainingDiverged, fit
from mlplab.train.predict import evaluate, predict

__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "History", "Trainer", "TrainingDiverged", "fit",
           "evaluate", "predict"]


# `mlplab.train(...)` is the public function that writes a run folder (runs/api.py), but `mlplab.train` is also
# this subpackage, and Python binds the subpackage to that attribute whenever it is imported. So the module
# object itself is callable and hands the call to the facade, which resolves the run layer by name: this
# package imports nothing above it.
import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        import mlplab

        return mlplab._train_function(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
