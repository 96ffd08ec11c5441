"""summary(): Keras 2's Sequential summary text, exactly; layer_configs()."""

from __future__ import annotations

from mlplab.model import build, layer_configs, summary

NOTEBOOK = "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"

# Every table line is padded to 65 characters, as Keras's print_row does: the trailing spaces are part of the text.
EXPECTED = "\n".join([
    'Model: "sequential"',
    "_" * 65,
    "Layer (type)                 Output Shape              Param #   ",
    "=" * 65,
    "dense_1 (Dense)              (None, 512)               401920    ",
    "_" * 65,
    "dropout_1 (Dropout)          (None, 512)               0         ",
    "_" * 65,
    "dense_2 (Dense)              (None, 512)               262656    ",
    "_" * 65,
    "dropout_2 (Dropout)          (None, 512)               0         ",
    "_" * 65,
    "dense_3 (Dense)              (None, 10)                5130      ",
    "=" * 65,
    "Total params: 669,706",
    "Trainable params: 669,706",
    "Non-trainable params: 0",
    "_" * 65,
])


def test_notebook_summary_exact_text():
    model = build(NOTEBOOK, 784)
    assert summary(model) == EXPECTED
    assert sum(p.numel() for p in model.parameters()) == 669_706


def test_print_fn_gets_each_line():
    lines = []
    text = summary(build(NOTEBOOK, 784), print_fn=lines.append)
    assert lines == text.split("\n")


def test_small_model_and_row_padding():
    text = summary(build("3:tanh,1:sigmoid", 2))
    rows = text.split("\n")
    assert rows[4] == "dense_1 (Dense)              (None, 3)                 9         "
    assert rows[6] == "dense_2 (Dense)              (None, 1)                 4         "
    assert rows[8:11] == ["Total params: 13", "Trainable params: 13", "Non-trainable params: 0"]
    assert all(len(r) == 65 for r in rows[1:8])


def test_layer_configs():
    configs = layer_configs(build(NOTEBOOK, 784, init="he_normal"))
    assert [c["name"] for c in configs] == ["dense_1", "dropout_1", "dense_2", "dropout_2", "dense_3"]
    assert configs[0] == {"name": "dense_1", "type": "Dense", "units": 512, "activation": "relu", "rate": None,
                          "initializer": "he_normal", "bias_initializer": "zeros", "trainable": True,
                          "output_shape": [None, 512], "params": 401920}
    assert configs[1] == {"name": "dropout_1", "type": "Dropout", "units": None, "activation": None, "rate": 0.2,
                          "initializer": None, "bias_initializer": None, "trainable": True,
                          "output_shape": [None, 512], "params": 0}
    assert configs[4]["activation"] == "softmax" and configs[4]["units"] == 10
