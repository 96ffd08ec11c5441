"""Learning-curve and comparison figures, checked on scripted histories (no training)."""

import math

import numpy as np
import pytest
from PIL import Image

from mlplab.viz.curves import best_epoch, compare_curves, history_summary, learning_curves, lr_varies
from mlplab.viz.figures import figure_bytes, png_data_uri, save_figure

NAN = float("nan")
VAL_LOSS = [0.9, 0.6, 0.45, 0.41, 0.43, 0.47, 0.52]  # minimum at epoch 4


def scripted(lr=None, val=True):
    rows = []
    for i, v in enumerate(VAL_LOSS):
        rows.append({
            "epoch": i + 1, "loss": 1.0 / (i + 1), "accuracy": 0.5 + 0.06 * i,
            "val_loss": v if val else NAN, "val_accuracy": (0.55 + 0.05 * i) if val else NAN,
            "lr": (lr[i] if lr else 0.01), "seconds": 0.5,
        })
    return rows


def by_gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


def test_lines_hold_the_history_and_best_epoch_is_argmin_of_val_loss():
    h = scripted()
    fig = learning_curves(h, stopped_epoch=7)
    loss_ax, acc_ax = fig.axes[:2]
    (train,) = by_gid(loss_ax, "train")
    (val,) = by_gid(loss_ax, "validation")
    assert list(train.get_xdata()) == [1, 2, 3, 4, 5, 6, 7]
    np.testing.assert_allclose(train.get_ydata(), [r["loss"] for r in h])
    np.testing.assert_allclose(val.get_ydata(), VAL_LOSS)
    np.testing.assert_allclose(by_gid(acc_ax, "validation")[0].get_ydata(), [r["val_accuracy"] for r in h])
    best = int(np.argmin(VAL_LOSS)) + 1
    for ax, key in ((loss_ax, "val_loss"), (acc_ax, "val_accuracy")):
        (marker,) = by_gid(ax, "best-epoch")
        assert list(marker.get_xdata()) == [best]
        assert marker.get_ydata()[0] == pytest.approx(h[best - 1][key])
        (stop,) = by_gid(ax, "early-stop")
        assert list(stop.get_xdata()) == [7, 7]
    assert len(fig.axes) == 2  # constant LR: no secondary axis


def test_lr_axis_only_when_lr_changes():
    lr = [0.1 * 0.5**i for i in range(len(VAL_LOSS))]
    fig = learning_curves(scripted(lr=lr))
    assert len(fig.axes) == 3
    (line,) = by_gid(fig.axes[2], "lr")
    np.testing.assert_allclose(line.get_ydata(), lr)
    # linear from 0, so a cosine's near-zero last step cannot squash the curve (as a log axis did)
    assert fig.axes[2].get_yscale() == "linear" and fig.axes[2].get_ylim()[0] == 0
    assert lr_varies(scripted(lr=lr)) and not lr_varies(scripted())


def test_without_validation_there_is_no_validation_line_and_best_uses_train_loss():
    h = scripted(val=False)
    fig = learning_curves(h)
    assert by_gid(fig.axes[0], "validation") == []
    assert best_epoch(h) is None
    summary = history_summary(h)
    assert summary["monitor"] == "loss" and summary["best_epoch"] == 7  # train loss falls monotonically
    (marker,) = by_gid(fig.axes[0], "best-epoch")  # falls back to the training loss, like history_summary
    assert list(marker.get_xdata()) == [7]


def test_best_epoch_modes_ties_and_nans():
    rows = [{"epoch": e, "val_loss": v, "val_accuracy": a}
            for e, v, a in [(1, NAN, 0.5), (2, 0.3, 0.9), (3, 0.3, 0.9), (4, 0.5, 0.8)]]
    assert best_epoch(rows, "val_loss") == 2  # tie: the earliest, as EarlyStopping keeps it
    assert best_epoch(rows, "val_accuracy") == 2  # "acc" in the name: maximised
    assert best_epoch(rows, "val_loss", mode="max") == 4
    assert best_epoch([], "val_loss") is None


def test_history_summary_values():
    s = history_summary(scripted())
    assert s["best_epoch"] == 4 and s["epochs"] == 7
    assert s["best_val_loss"] == pytest.approx(0.41)
    assert s["best_val_accuracy"] == pytest.approx(0.55 + 0.05 * 3)
    assert s["seconds"] == pytest.approx(3.5)


def test_compare_overlays_each_run():
    a, b = scripted(), scripted()[:4]
    fig = compare_curves([("no dropout", a), ("dropout <0.2>", b)], title="dropout")
    loss_ax = fig.axes[0]
    np.testing.assert_allclose(by_gid(loss_ax, "validation:no dropout")[0].get_ydata(), VAL_LOSS)
    np.testing.assert_allclose(by_gid(loss_ax, "validation:dropout <0.2>")[0].get_ydata(), VAL_LOSS[:4])
    assert list(by_gid(loss_ax, "best-epoch:no dropout")[0].get_xdata()) == [4]
    colors = {by_gid(loss_ax, f"validation:{n}")[0].get_color() for n in ("no dropout", "dropout <0.2>")}
    assert len(colors) == 2
    labels = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert labels == ["no dropout", "dropout <0.2>"]


def test_save_figure_writes_png_and_svg_atomically(tmp_path):
    fig = learning_curves(scripted())
    paths = save_figure(fig, tmp_path / "plots" / "curves")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["curves.png", "curves.svg"]  # no temp files
    with Image.open(paths["png"]) as im:
        im.verify()
    assert paths["svg"].read_text().lstrip().startswith("<?xml")
    assert "loss" in paths["svg"].read_text()  # text kept as text (svg.fonttype none)


def test_png_data_uri_roundtrip():
    import base64
    import io

    fig = learning_curves(scripted())
    uri = png_data_uri(fig)
    assert uri.startswith("data:image/png;base64,")
    raw = base64.b64decode(uri.split(",", 1)[1])
    assert raw == figure_bytes(fig)  # rendering is deterministic
    with Image.open(io.BytesIO(raw)) as im:
        assert im.format == "PNG" and im.size[0] > 1000


def test_compare_uses_a_log_loss_axis_only_when_losses_span_a_decade():
    narrow = scripted()  # losses 0.14 .. 1.0
    assert compare_curves([("a", narrow), ("b", narrow)]).axes[0].get_yscale() == "linear"
    wide = [dict(r, loss=r["loss"] / 100) for r in narrow]
    assert compare_curves([("a", narrow), ("b", wide)]).axes[0].get_yscale() == "log"
