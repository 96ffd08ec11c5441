"""A run as an MLflow pyfunc model, without pickle: the logged model holds the run's model.safetensors and
config.json, and MLflow loads it through this module (`loader_module`), which rebuilds the MLP from the
spec and predicts class probabilities, one column per class name.

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")
    proba = model.predict(x)          # x: (N, features) or (N, H, W) images, array or DataFrame
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mlplab.errors import MlplabError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class MlplabPyfunc:
    """What mlflow.pyfunc wraps: `predict(model_input)` -> DataFrame of class probabilities (N, classes)."""

    def __init__(self, folder):
        from mlplab.model import build
        from mlplab.runs.checkpoint import load_weights

        folder = Path(folder)
        try:
            config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
            spec, input_dim = config["model"]["spec"], int(config["model"]["input_dim"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MlplabError(f"{folder / CONFIG} is not an mlplab model config ({exc})") from exc
        self.model = build(spec, input_dim, init=config["model"].get("init", "glorot_uniform"))
        load_weights(self.model, folder / WEIGHTS)
        self.model.eval()
        names = (config.get("data") or {}).get("class_names") or []
        self.class_names = [str(n) for n in names] if len(names) == self.model.n_outputs \
            else [str(i) for i in range(self.model.n_outputs)]

    def predict(self, model_input, params=None):
        import pandas as pd

        from mlplab.train.predict import predict

        x = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
        proba = predict(self.model, x)  # the same path as `mlplab predict` (to_features, inference mode)
        return pd.DataFrame(proba, columns=self.class_names)


def _load_pyfunc(data_path):
    """MLflow's loader_module entry point: `data_path` is the folder saved with the model."""
    return MlplabPyfunc(data_path)
