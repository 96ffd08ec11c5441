"""Inference-side helpers of the public API: predict and evaluate on arrays."""

from __future__ import annotations

import numpy as np
import torch

from mlplab.errors import MlplabError


def check_model(model) -> None:
    from mlplab.model.mlp import MLP

    if not isinstance(model, MLP):
        raise MlplabError(f"expected an mlplab model (mlplab.build(...) or open_run(...).model()), "
                          f"got {type(model).__name__}")


def check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MlplabError(f"batch_size must be a whole number >= 1 (got {batch_size!r})")


def _inputs(model, x, batch_size: int = 1) -> torch.Tensor:
    from mlplab.train.trainer import as_inputs

    check_model(model)
    check_batch_size(batch_size)
    x_np = as_inputs(x)
    if x_np.shape[1] != model.input_dim:
        raise MlplabError(f"the model takes {model.input_dim} inputs but got {x_np.shape[1]} features per sample")
    device = next(model.parameters()).device
    return torch.from_numpy(x_np).to(device)


def predict(model, x, *, batch_size: int = 4096) -> np.ndarray:
    """Class probabilities (N, classes) for images or features, in inference mode (dropout off)."""
    from mlplab.model import engine

    return engine.predict_proba(model, _inputs(model, x, batch_size), batch_size=batch_size).cpu().numpy()


def evaluate(model, x, y, *, loss: str = "categorical_crossentropy", class_names=None,
             batch_size: int = 4096) -> dict:
    """Loss, accuracy, per-class precision/recall/F1 and confusion matrix, as metrics.json holds them."""
    from mlplab.model import engine
    from mlplab.train.metrics import classification_metrics
    from mlplab.train.trainer import as_targets, class_indices

    from mlplab.model import LOSSES
    from mlplab.train.metrics import n_classes_of

    if loss not in LOSSES:
        raise MlplabError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    xt = _inputs(model, x, batch_size)
    y_np = class_indices(as_targets(y))
    if len(y_np) != len(xt):
        raise MlplabError(f"x has {len(xt)} samples but y has {len(y_np)}")
    k = n_classes_of(model.n_outputs)
    if y_np.min() < 0 or y_np.max() >= k:
        raise MlplabError(f"labels must be in [0, {k}) for this model; found {int(y_np.min())}..{int(y_np.max())}")
    yt = torch.from_numpy(y_np).to(xt.device)
    loss_value, _ = engine.evaluate(model, xt, yt, loss, batch_size=batch_size)
    proba = engine.predict_proba(model, xt, batch_size=batch_size).cpu().numpy()
    names = list(class_names) if class_names is not None else [str(i) for i in range(proba.shape[1])]
    return classification_metrics(y_true=y_np, probabilities=proba, loss=loss_value, class_names=names,
                                  data="arrays")
