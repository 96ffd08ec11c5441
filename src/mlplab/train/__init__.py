"""Training: the fit loop, callbacks, history, optimizers and schedules, checkpoints, whole runs."""

from mlplab.train.callbacks import Callback, EarlyStopping, LambdaCallback
from mlplab.train.history import History
from mlplab.train.trainer import Trainer, TrainingDiverged, fit
from mlplab.train.predict import evaluate, predict

__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "History", "Trainer", "TrainingDiverged", "fit",
           "evaluate", "predict"]
