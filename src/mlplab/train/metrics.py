"""Test-set metrics: loss, accuracy, per-class precision/recall/F1 and the confusion matrix."""

from __future__ import annotations

import numpy as np


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
    probabilities = np.asarray(probabilities)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probabilities.argmax(axis=1)
    n_classes = probabilities.shape[1]
    names = list(class_names) if len(class_names) == n_classes else [str(i) for i in range(n_classes)]
    cm = confusion_matrix(y_true, y_pred, n_classes)
    per_class = per_class_scores(cm, names)
    return {
        "test_loss": float(loss),
        "test_accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "n_test": int(len(y_true)),
        "class_names": names,
        "per_class": per_class,
        "macro_f1": float(np.mean([c["f1"] for c in per_class])) if per_class else float("nan"),
        "confusion_matrix": cm.tolist(),
        "data": data,
        "split": split,
    }
