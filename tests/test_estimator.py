"""MLPClassifier: scikit-learn's estimator checks, its model-selection tools, and values on real data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from mlplab.errors import MlplabError
from mlplab.train.estimator import EstimatorInputError, MLPClassifier


# Every check scikit-learn applies to a classifier runs; none is skipped or expected to fail. Fewer epochs
# than the default keep the ~55 checks quick (each fits several times).
@parametrize_with_checks([MLPClassifier(epochs=50)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def test_digits_accuracy_and_probabilities(digits):
    x_tr, x_te, y_tr, y_te = digits
    clf = make_pipeline(StandardScaler(), MLPClassifier(epochs=60, seed=0)).fit(x_tr, y_tr)
    assert clf.score(x_te, y_te) >= 0.95
    proba = clf.predict_proba(x_te)
    assert proba.shape == (len(x_te), 10) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(clf.classes_, np.arange(10))
    assert np.array_equal(clf.predict(x_te), clf.classes_[proba.argmax(axis=1)])


def test_string_labels_and_same_seed_same_model(digits):
    x_tr, x_te, y_tr, _ = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    a = MLPClassifier(hidden="32:relu", epochs=5, seed=3).fit(x_tr / 16, names[y_tr])
    b = MLPClassifier(hidden="32:relu", epochs=5, seed=3).fit(x_tr / 16, names[y_tr])
    assert list(a.classes_) == sorted(names)
    assert set(a.predict(x_te / 16)) <= set(names)
    assert np.array_equal(a.predict_proba(x_te / 16), b.predict_proba(x_te / 16))
    assert a.n_iter_ == 5 and len(a.history_.rows) == 5


def test_partial_fit_trains_one_epoch_per_call(digits):
    x_tr, x_te, y_tr, y_te = digits
    clf = MLPClassifier(hidden="64:relu", lr=1e-2, seed=0)
    with pytest.raises(MlplabError, match="classes"):
        clf.partial_fit(x_tr / 16, y_tr)
    for _ in range(8):
        clf.partial_fit(x_tr / 16, y_tr, classes=np.arange(10))
    assert clf.n_iter_ == 8
    assert clf.score(x_te / 16, y_te) >= 0.9
    with pytest.raises(MlplabError, match="not in classes"):
        clf.partial_fit(x_tr[:5] / 16, np.full(5, 42))


def test_model_selection_tools(digits):
    x_tr, _, y_tr, _ = digits
    grid = GridSearchCV(MLPClassifier(hidden="32:relu", epochs=15), {"lr": [1e-3, 1e-2]}, cv=2)
    grid.fit(x_tr / 16, y_tr)
    assert grid.best_params_["lr"] in (1e-3, 1e-2) and grid.best_score_ > 0.8
    scores = cross_val_score(MLPClassifier(hidden="32:relu", lr=1e-2, epochs=15), x_tr / 16, y_tr, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8


def test_the_notebook_network_as_an_estimator(digits):
    clf = MLPClassifier("512:relu,dropout:0.2,512:relu,dropout:0.2", optimizer="sgd", lr=0.1, momentum=0.9,
                        batch_size=128, epochs=3).fit(digits[0] / 16, digits[2])
    assert clf.model_.spec == "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"
    assert clf.score(digits[1] / 16, digits[3]) > 0.9


@pytest.mark.parametrize("make, message", [
    (lambda: MLPClassifier().fit(np.zeros((4, 3)), np.zeros(4)), "at least 2 classes"),
    (lambda: MLPClassifier().fit(np.full((4, 3), np.nan), [0, 1, 0, 1]), "NaN"),
    (lambda: MLPClassifier().fit(np.zeros((4, 3)), [0.5, 1.5, 0.5, 1.5]), "Unknown label type"),
    (lambda: MLPClassifier(epochs=1).fit(np.zeros((4, 3)), [0, 1, 0, 1]).predict(np.zeros((2, 5))),
     "X has 5 features"),
    (lambda: MLPClassifier(lr=-1).fit(np.zeros((4, 3)), [0, 1, 0, 1]), "lr must be"),
    (lambda: MLPClassifier(hidden="12:wiggle").fit(np.zeros((4, 3)), [0, 1, 0, 1]), "wiggle"),
])
def test_bad_input_is_one_mlplab_error_line(make, message):
    with pytest.raises(MlplabError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_input_errors_are_value_errors_too():
    with pytest.raises(ValueError):
        MLPClassifier().fit(np.zeros((4, 3)), np.zeros(4))
    assert issubclass(EstimatorInputError, MlplabError) and issubclass(EstimatorInputError, ValueError)
