"""Confusion-matrix heatmap: the numbers in the cells and the row normalisation."""

import numpy as np
import pytest

from mlplab.viz.confusion import confusion_counts, confusion_figure, row_normalize


def test_counts_rows_true_columns_predicted():
    m = confusion_counts([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_row_normalize_handles_empty_rows():
    share = row_normalize([[2, 2], [0, 0]])
    assert share.tolist() == [[0.5, 0.5], [0.0, 0.0]]


def test_cell_texts_are_the_counts_and_colours_the_row_shares():
    m = np.array([[50, 0, 2], [3, 40, 7], [0, 1, 99]])
    names = ["T-shirt/top", "Trouser", "Ankle boot"]
    fig = confusion_figure(m, names)
    ax = fig.axes[0]
    cells = {t.get_gid(): t.get_text() for t in ax.texts}
    assert cells == {f"cell-{i}-{j}": str(m[i, j]) for i in range(3) for j in range(3)}
    np.testing.assert_allclose(ax.images[0].get_array(), row_normalize(m))
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert ax.get_title(loc="left") == "Confusion matrix: 202 samples, 93.6% correct"  # 189 of 202 on the diagonal
    # diagonal in bold, dark cells get white text so the count stays readable
    diag = next(t for t in ax.texts if t.get_gid() == "cell-2-2")
    assert diag.get_fontweight() == "bold" and diag.get_color() == "white"


def test_rejects_non_square():
    with pytest.raises(ValueError):
        confusion_figure(np.zeros((2, 3)))


def test_many_classes_skip_annotations():
    fig = confusion_figure(np.eye(30, dtype=int) * 5)
    assert len(fig.axes[0].texts) == 0
