"""Test-set metrics: loss, accuracy, per-class precision/recall/F1 and the confusion matrix."""

from __future__ import annotations

import numpy as np

from mlplab.errors import MlplabError


# One definition of a classifier's prediction, shared by the per-epoch accuracy (model/engine.py _n_correct,
# which the compiled kernels match for softmax outputs), test metrics, `evaluate` and `predict`:
#   several output units: the class of the largest output (the first one on ties, as argmax);
#   one sigmoid unit (two classes): class 1 when p > 0.5, Keras's binary accuracy with threshold 0.5.
BINARY_THRESHOLD = 0.5


def class_probabilities(outputs) -> np.ndarray:
    """(N, classes) probabilities from a model's outputs: a one-unit output p stands for the classes (1 - p, p),
    so that argmax predicts class 1 exactly when p > 0.5."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs


def n_classes_of(n_outputs: int) -> int:
    """How many classes a model with this many output units tells apart (a one-unit sigmoid: two)."""
    return 2 if n_outputs == 1 else n_outputs


def output_layer_problem(n_outputs: int, activation: str, loss: str, n_classes: int | None = None) -> str | None:
    """Why this output layer cannot classify the data, or None. A one-unit softmax is always 1.0, so it is
    refused rather than given a meaning; one unit must be a sigmoid trained with binary cross-entropy or MSE."""
    if n_outputs == 1:
        if activation == "softmax":
            return ("a softmax over one unit always outputs 1.0; for two classes end the spec with 1:sigmoid "
                    "and use --loss binary_crossentropy, or with 2:softmax")
        if activation != "sigmoid" or loss == "categorical_crossentropy":
            return (f"a one-unit output layer ({n_outputs}:{activation} with {loss}) is a two-class classifier only "
                    "as 1:sigmoid with --loss binary_crossentropy (or mse); or end the spec with N:softmax")
        if n_classes is not None and n_classes > 2:
            return (f"the model's output layer has 1 unit (two classes) but the data has {n_classes} classes; "
                    f"end the spec with {n_classes}:softmax")
        return None
    if n_classes is not None and n_outputs != n_classes:
        return (f"the model's output layer has {n_outputs} units but the data has {n_classes} classes; "
                f"end the spec with {n_classes}:softmax" + (" (or 1:sigmoid with --loss binary_crossentropy)"
                                                             if n_classes == 2 else ""))
    return None


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def per_class_scores(cm: np.ndarray, class_names: list[str]) -> list[dict]:
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    # a class never predicted (or never present) gets 0 rather than NaN, as scikit-learn's zero_division=0
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return [
        {"class": str(name), "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    ]


def classification_metrics(*, y_true, probabilities, loss: float, class_names: list[str], data: str,
                           split: str = "test") -> dict:
    probabilities = class_probabilities(probabilities)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probabilities.argmax(axis=1)
    n_classes = probabilities.shape[1]
    names = list(class_names) if len(class_names) == n_classes else [str(i) for i in range(n_classes)]
    cm = confusion_matrix(y_true, y_pred, n_classes)
    per_class = per_class_scores(cm, names)
    return Metrics({
        "test_loss": float(loss),
        "test_accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "n_test": int(len(y_true)),
        "class_names": names,
        "per_class": per_class,
        "macro_f1": float(np.mean([c["f1"] for c in per_class])) if per_class else float("nan"),
        "confusion_matrix": cm.tolist(),
        "data": data,
        "split": split,
    })


class Metrics(dict):
    """Test metrics: the metrics.json dict (every key as before) with attribute views and a readable repr.

    A dict subclass so json.dumps, metrics["test_accuracy"] and every existing caller keep working; in a
    notebook it shows itself as a per-class table and a confusion matrix (registered by the package facade).
    """

    def __init__(self, values=(), **more):
        from collections.abc import Mapping

        if not isinstance(values, Mapping):
            raise MlplabError(f"Metrics takes a mapping such as metrics.json's (got {type(values).__name__})")
        super().__init__(values, **more)

    @property
    def accuracy(self) -> float:
        return self["test_accuracy"]

    @property
    def loss(self) -> float:
        return self["test_loss"]

    @property
    def confusion_matrix(self) -> np.ndarray:
        return np.asarray(self["confusion_matrix"], dtype=np.int64)

    @property
    def per_class(self) -> list[dict]:
        return self["per_class"]

    def __repr__(self) -> str:
        lines = [f"Metrics({self.get('split', 'test')}: accuracy {self.get('test_accuracy', float('nan')):.4f}, "
                 f"loss {self.get('test_loss', float('nan')):.4f}, {self.get('n_test', '?')} samples)"]
        rows = self.get("per_class", [])
        width = max([5] + [len(c["class"]) for c in rows])
        if rows:
            lines.append(f"  {'class':<{width}}  precision  recall      f1  support")
        lines += [f"  {c['class']:<{width}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['f1']:6.3f}  "
                  f"{c['support']:7d}" for c in rows]
        return "\n".join(lines)
