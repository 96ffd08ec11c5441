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
