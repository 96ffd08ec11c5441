"""`MLPClassifier`: mlplab's engine as a scikit-learn estimator, for Pipeline, GridSearchCV and cross_val_score.

The network is the hidden part of a model spec plus a softmax output sized to the classes seen in `fit`.
Defaults follow scikit-learn's own MLPClassifier (one hidden layer of 100 ReLU units, Adam at 1e-3, up to 200
epochs), because its users tune from there; every training option of `mlplab.fit` is a parameter. Bad input
raises `EstimatorInputError`, which is both an `MlplabError` (mlplab's promise) and a `ValueError`
(scikit-learn's convention, which its model-selection tools and checks rely on).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from mlplab.errors import MlplabError


class EstimatorInputError(MlplabError, ValueError):
    """Bad input to MLPClassifier: a ValueError as scikit-learn expects, and an MlplabError as mlplab promises."""


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """A fully-connected classifier trained by mlplab's engine.

    hidden: the spec of the layers before the output, e.g. "512:relu,dropout:0.2,512:relu,dropout:0.2"
    (the notebook's network); "" for none (multinomial logistic regression). `epochs` is the number of epochs
    each `fit` trains from scratch; `partial_fit` trains one more epoch on the data it is given.
    """

    def __init__(self, hidden: str = "100:relu", *, optimizer: str = "adam", lr: float = 1e-3,
                 momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 schedule: str = "constant", batch_size: int = 200, epochs: int = 200,
                 validation_split: float = 0.0, early_stopping=None, init: str = "glorot_uniform",
                 seed: int = 0, device: str = "cpu", threads=None, verbose=0):
        self.hidden = hidden
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.batch_size = batch_size
        self.epochs = epochs
        self.validation_split = validation_split
        self.early_stopping = early_stopping
        self.init = init
        self.seed = seed
        self.device = device
        self.threads = threads
        self.verbose = verbose

    # --- scikit-learn's protocol -----------------------------------------------------------------------
    def fit(self, X, y):
        X, y = self._check_xy(X, y, reset=True)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise EstimatorInputError(f"MLPClassifier needs samples of at least 2 classes; got 1 class "
                                      f"({self.classes_[0]!r})")
        self._build()
        self._train(X, y_index, self.epochs, validation_split=self.validation_split,
                    early_stopping=self.early_stopping)
        return self

    def partial_fit(self, X, y, classes=None):
        first = not hasattr(self, "model_")
        X, y = self._check_xy(X, y, reset=first)
        if first:
            if classes is None:
                raise EstimatorInputError("the first partial_fit call needs classes=[...] (every class the "
                                          "model will see)")
            self.classes_ = np.unique(np.asarray(classes))
            if len(self.classes_) < 2:
                raise EstimatorInputError("classes must list at least 2 classes")
            self._build()
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise EstimatorInputError(f"classes changed between partial_fit calls (first {list(self.classes_)})")
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if len(unknown):
            raise EstimatorInputError(f"y has labels {list(unknown)[:5]} that are not in classes "
                                      f"{list(self.classes_)}")
        self._train(X, np.searchsorted(self.classes_, y), 1)
        return self

    def predict_proba(self, X) -> np.ndarray:
        from mlplab.train.predict import predict

        X = self._check_x(X)
        return predict(self.model_, X)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is looked up
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.device != "cpu"  # CUDA reductions are not bit-reproducible
        return tags

    # --- helpers -------------------------------------------------------------------------------------
    def _build(self) -> None:
        from mlplab.model import build

        spec = ",".join(part for part in (str(self.hidden).strip(" ,"), f"{len(self.classes_)}:softmax") if part)
        self.model_ = build(spec, self.n_features_in_, init=self.init, seed=self.seed)

    def _train(self, X, y_index, epochs: int, **extra) -> None:
        from mlplab.train.trainer import fit

        self.history_ = fit(self.model_, X, y_index, epochs=epochs, batch_size=self.batch_size,
                            optimizer=self.optimizer, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                            weight_decay=self.weight_decay, schedule=self.schedule, seed=self.seed,
                            device=self.device, threads=self.threads, verbose=self.verbose, **extra)
        self.n_iter_ = self.history_.epochs_done

    def _check_xy(self, X, y, *, reset: bool):
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import check_X_y

        try:
            X, y = check_X_y(X, y, dtype=np.float32)
            check_classification_targets(y)
        except ValueError as exc:
            raise EstimatorInputError(str(exc)) from None
        self._check_width(X, reset=reset)
        return X, y

    def _check_x(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_array, check_is_fitted

        check_is_fitted(self, "model_")
        try:
            X = check_array(X, dtype=np.float32)
        except ValueError as exc:
            raise EstimatorInputError(str(exc)) from None
        self._check_width(X, reset=False)
        return X

    def _check_width(self, X: np.ndarray, *, reset: bool) -> None:
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise EstimatorInputError(f"X has {X.shape[1]} features, but MLPClassifier is expecting "
                                      f"{self.n_features_in_} features as input")
