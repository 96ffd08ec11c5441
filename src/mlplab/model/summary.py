"""Keras-shaped model summary text and per-layer configs.

The table copies Keras 2's `print_summary` for a Sequential model character for character: line length 65, column
stops at 29 and 55 (0.45 and 0.85 of the width), every row padded to the full width (trailing spaces included),
'_' rules between layer rows, '=' rules around them, parameter counts with thousands separators in the totals only.
"""

from __future__ import annotations

from mlplab.model.mlp import MLP

LINE_LENGTH = 65
_POSITIONS = (0.45, 0.85, 1.0)


def _row(fields, stops) -> str:
    # Keras's print_row: each field is cut at its column stop and padded to it; the character before a field is
    # forced to a space so that a cut field never runs into the next one.
    line = ""
    for i, field in enumerate(fields):
        if i > 0:
            line = line[:-1] + " "
        line += str(field)
        line = line[:stops[i]]
        line += " " * (stops[i] - len(line))
    return line


def _rows(model: MLP):
    width = model.input_dim
    for name, s in zip(model.layer_names, model.layer_specs):
        if s.kind == "dense":
            params = (width + 1) * s.units
            width = s.units
            yield name, "Dense", width, params
        else:
            yield name, "Dropout", width, 0


def summary(model: MLP, *, line_length: int = LINE_LENGTH, print_fn=None) -> str:
    """The Keras 2 `model.summary()` text for the model (no trailing newline).

    print_fn, if given, is also called once per line (Keras's hook); the library itself never prints.
    """
    stops = [int(line_length * p) for p in _POSITIONS]
    lines = ['Model: "sequential"', "_" * line_length, _row(("Layer (type)", "Output Shape", "Param #"), stops),
             "=" * line_length]
    rows = list(_rows(model))
    total = 0
    for i, (name, kind, width, params) in enumerate(rows):
        total += params
        lines.append(_row((f"{name} ({kind})", f"(None, {width})", params), stops))
        lines.append(("=" if i == len(rows) - 1 else "_") * line_length)
    lines += [f"Total params: {total:,}", f"Trainable params: {total:,}", "Non-trainable params: 0",
              "_" * line_length]
    if print_fn is not None:
        for line in lines:
            print_fn(line)
    return "\n".join(lines)


def layer_configs(model: MLP) -> list[dict]:
    """One dict per layer: name, type, units, activation, rate, initializer, trainable, output_shape, params.

    Keys that do not apply to a layer type are None (units/activation/initializer for Dropout, rate for Dense).
    """
    out = []
    for (name, kind, width, params), s in zip(_rows(model), model.layer_specs):
        dense = kind == "Dense"
        out.append({
            "name": name,
            "type": kind,
            "units": s.units if dense else None,
            "activation": s.activation if dense else None,
            "rate": None if dense else s.rate,
            "initializer": model.init if dense else None,
            "bias_initializer": "zeros" if dense else None,
            "trainable": True,  # Keras reports trainable=True for Dropout too (it simply has no weights)
            "output_shape": [None, width],
            "params": params,
        })
    return out
