"""How good is a 2-D map? Two numbers that answer different questions.

- 10-NN class accuracy in 2-D (5-fold cross-validated): are classes separated in the picture?
- trustworthiness (k=10): are a point's neighbours in the picture also its neighbours in the original
  features? (1.0 = no false neighbours). It needs all pairwise distances, so it is computed on a seeded
  subsample of at most 2,000 points.
"""

from __future__ import annotations

import numpy as np

K = 10
TRUST_MAX_POINTS = 2000


def knn_accuracy(coords, labels, k: int = K, folds: int = 5, seed: int = 0) -> float | None:
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    n = len(labels)
    if n < 2 * folds:
        return None
    k = min(k, n - n // folds - 1)  # each training fold must hold more than k points
    counts = np.unique(labels, return_counts=True)[1]
    # Stratify when every class can appear in every fold; otherwise plain shuffled folds (no warning spam).
    cv = (StratifiedKFold if counts.min() >= folds else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=k), np.asarray(coords, dtype=np.float64), labels, cv=cv)
    return float(scores.mean())


def trustworthiness(coords, features, k: int = K, max_points: int = TRUST_MAX_POINTS, seed: int = 0) -> float | None:
    from sklearn.manifold import trustworthiness as sk_trust

    n = len(coords)
    if n > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
        coords, features = np.asarray(coords)[idx], np.asarray(features)[idx]
        n = max_points
    k = min(k, (n - 1) // 2)  # sklearn requires k < n / 2
    if k < 1:
        return None
    return float(sk_trust(np.asarray(features, dtype=np.float64), np.asarray(coords, dtype=np.float64), n_neighbors=k))


def quality(coords, labels, features=None, seed: int = 0) -> dict:
    """{"knn_accuracy": float | None, "trustworthiness": float | None (None without features)}."""
    coords = np.asarray(coords)
    if features is not None and len(features) != len(coords):
        raise ValueError(f"features have {len(features)} rows, coords {len(coords)}")
    return {
        "knn_accuracy": knn_accuracy(coords, labels, seed=seed),
        "trustworthiness": trustworthiness(coords, features, seed=seed) if features is not None else None,
    }
