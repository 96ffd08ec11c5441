"""Sample grid and the gallery of the most confident mistakes."""

import numpy as np

from mlplab.viz.gallery import as_image, confident_mistakes, mistakes_figure, mosaic, sample_indices, samples_figure


def test_confident_mistakes_picks_the_k_highest_confidence_wrong_predictions():
    proba = np.array([
        [0.90, 0.05, 0.05],  # 0: true 0, right
        [0.10, 0.80, 0.10],  # 1: true 0, wrong at 0.80
        [0.20, 0.20, 0.60],  # 2: true 1, wrong at 0.60
        [0.02, 0.97, 0.01],  # 3: true 2, wrong at 0.97
        [0.05, 0.05, 0.90],  # 4: true 2, right
        [0.10, 0.80, 0.10],  # 5: true 2, wrong at 0.80 (tie with 1: original order kept)
    ])
    y = np.array([0, 0, 1, 2, 2, 2])
    assert confident_mistakes(proba, y, 3).tolist() == [3, 1, 5]
    assert confident_mistakes(proba, y, 10).tolist() == [3, 1, 5, 2]
    assert confident_mistakes(proba, y, 0).tolist() == []
    assert confident_mistakes(proba[[0, 4]], y[[0, 4]], 5).tolist() == []


def test_mistakes_figure_titles_name_true_pred_and_confidence():
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    proba = np.array([[0.1, 0.9], [0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    y = np.array([0, 1, 1, 0])
    idx = confident_mistakes(proba, y, 5)
    assert idx.tolist() == [0, 1]
    fig = mistakes_figure(images, proba, y, ["cat", "<dog>"], idx)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["true: cat\npred: <dog>\n90% sure", "true: <dog>\npred: cat\n70% sure"]
    gids = [im.get_gid() for ax in fig.axes for im in ax.images]
    assert gids == ["mistake-0", "mistake-1"]


def test_mistakes_figure_without_mistakes():
    fig = mistakes_figure(np.zeros((1, 4, 4)), np.array([[1.0, 0.0]]), np.array([0]), ["a", "b"], [])
    assert any(t.get_text() == "no mistakes" for ax in fig.axes for t in ax.texts)


def test_sample_indices_are_per_class_seeded_and_bounded():
    labels = np.array([0] * 20 + [1] * 3 + [2] * 7)
    picks = sample_indices(labels, 5, seed=1)
    assert [p.size for p in picks] == [5, 3, 5]
    for c, p in enumerate(picks):
        assert (labels[p] == c).all()
    assert [p.tolist() for p in sample_indices(labels, 5, seed=1)] == [p.tolist() for p in picks]


def test_samples_figure_rows_are_labelled_by_class():
    labels = np.repeat(np.arange(3), 4)
    images = np.random.default_rng(0).random((12, 64))  # flat 8x8 rows
    fig = samples_figure(images, labels, ["zero", "one", "two"], per_class=4)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["zero", "one", "two"]
    grid = ax.images[0].get_array()
    assert grid.shape == (3 * 8 + 2, 4 * 8 + 3)  # 8x8 tiles, 1 pixel apart
    np.testing.assert_allclose(grid[:8, :8], images[sample_indices(labels, 4)[0][0]].reshape(8, 8))


def test_mosaic_places_tiles():
    a, b, c = np.full((2, 2), 1.0), np.full((2, 2), 2.0), np.full((2, 2), 3.0)
    m = mosaic([[a, b], [c]], pad=1, fill=0.0)
    assert m.tolist() == [[1, 1, 0, 2, 2], [1, 1, 0, 2, 2], [0, 0, 0, 0, 0], [3, 3, 0, 0, 0], [3, 3, 0, 0, 0]]


def test_as_image_shapes():
    assert as_image(np.zeros(784)).shape == (28, 28)
    assert as_image(np.zeros(10)).shape == (1, 10)
    assert as_image(np.zeros((28, 28, 3))).shape == (28, 28)
    assert as_image(np.zeros(12), shape=(3, 4)).shape == (3, 4)
