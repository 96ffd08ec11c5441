import errno
import math
import os

import pytest

from mlplab.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from mlplab.errors import MlplabError
from mlplab.runs.folder import format_history_csv, parse_history_csv
from mlplab.train.optim import make_schedule


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_full_disk_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "weights.bin"
    atomic_write_bytes(target, b"good")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(MlplabError, match="disk full while writing .*weights.bin; the previous version"):
        atomic_write_bytes(target, b"new contents")
    monkeypatch.undo()
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_json_roundtrip(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"a": [1, 2.5], "b": None})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": [\n    1,\n    2.5\n  ],\n  "b": null\n}\n'


def test_history_csv_roundtrip_is_exact():
    rows = [{"epoch": 1, "loss": 0.1 + 0.2, "accuracy": 1 / 3, "val_loss": math.nan, "val_accuracy": math.nan,
             "lr": 0.01, "seconds": 1.2345678901234}]
    text = format_history_csv(rows)
    assert text.splitlines()[0] == "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"
    back = parse_history_csv(text)
    assert back[0]["loss"] == 0.1 + 0.2 and back[0]["accuracy"] == 1 / 3
    assert math.isnan(back[0]["val_loss"])
    assert format_history_csv(back) == text


@pytest.mark.parametrize("text, message", [
    ("epoch,loss\n1,2\n", "header must be"),
    ("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n1,x,1,1,1,1,1\n", "line 2 is not numeric"),
    ("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n1,1\n", "line 2 has 2 fields"),
    ("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n1,1,1,1,1,1,1\n1,1,1,1,1,1,1\n",
     "line 3: epoch 1 repeats epoch 1"),
    ("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n1,1,1,1,1,1,1\n3,1,1,1,1,1,1\n2,1,1,1,1,1,1\n",
     "line 4: epoch 2 comes after epoch 3"),
    ("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n0,1,1,1,1,1,1\n", "line 2: epoch 0 is below 1"),
])
def test_corrupt_history_is_one_line_error(text, message):
    with pytest.raises(MlplabError, match=message):
        parse_history_csv(text)


def test_history_with_a_byte_order_mark_is_read():
    rows = [{"epoch": 1, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7, "lr": 0.01,
             "seconds": 1.0}]
    text = format_history_csv(rows)
    assert parse_history_csv("\ufeff" + text) == rows


def test_run_files_saved_with_a_byte_order_mark_are_read(tmp_path):
    """Spreadsheets and Windows editors save UTF-8 with a BOM: history.csv, config.json and TOML files."""
    from mlplab.runs.config import read_toml
    from mlplab.runs.folder import _read_json

    (tmp_path / "c.toml").write_bytes(b"\xef\xbb\xbfepochs = 3\n")
    assert read_toml(tmp_path / "c.toml") == {"epochs": 3}
    (tmp_path / "m.json").write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert _read_json(tmp_path / "m.json") == {"a": 1}


def test_schedules_values():
    const = make_schedule("constant", 0.1, steps_per_epoch=10, epochs=5)
    assert const(0) == const(49) == 0.1
    step = make_schedule("step", 0.1, steps_per_epoch=10, epochs=30, step_size=10, gamma=0.5)
    assert step(99) == 0.1 and step(100) == 0.05 and step(200) == 0.025
    cos = make_schedule("cosine", 0.1, steps_per_epoch=10, epochs=5)
    assert cos(0) == pytest.approx(0.1) and cos(25) == pytest.approx(0.05) and cos(50) == pytest.approx(0.0)
    one = make_schedule("onecycle", 0.1, steps_per_epoch=10, epochs=10)
    assert one(0) == pytest.approx(0.1 / 25) and one(30) == pytest.approx(0.1)
    assert one(100) == pytest.approx(0.1 / 1e4)
    lrs = [one(s) for s in range(101)]
    assert max(lrs) == pytest.approx(0.1) and lrs.index(max(lrs)) == 30


def test_unknown_schedule_lists_choices():
    with pytest.raises(MlplabError, match="choose one of: constant, step, cosine, onecycle"):
        make_schedule("linear", 0.1, steps_per_epoch=1, epochs=1)
