"""The model spec grammar: `512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax`.

Grammar (whitespace around tokens and around the colon is ignored, names are case-insensitive):

    spec   := layer ("," layer)*
    layer  := UNITS ":" ACTIVATION        a dense layer, 1 <= UNITS <= 1,000,000 (ASCII digits only)
            | "dropout" ":" RATE          a dropout layer, 0 <= RATE < 1 (a plain decimal, e.g. 0.2, .5, 2e-1)

Decisions (documented here because the error messages refer to them):
- The last layer must be dense: a dropout after the output layer would only add noise to the predictions. A
  dropout may come first (noise on the inputs, as Keras allows: `dropout:0.1,512:relu,...`).
- Two dropout layers in a row are rejected (one dropout with the combined rate says the same thing).
- softmax is allowed in hidden layers, as in Keras (the engine has its exact gradient); it is rarely useful.
- The units cap guards against typos such as `5120000:relu` that would otherwise end in an out-of-memory crash.

Every malformed spec raises MlplabError with one line that names the layer (1-based), its character column in the
spec, the bad token and the allowed values. No other exception type escapes parse_spec.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mlplab.errors import MlplabError
from mlplab.model.activations import NAMES

ACTIVATIONS = NAMES  # from the activation table (model/activations.py), in the order error messages list them
MAX_UNITS = 1_000_000
EXAMPLE = "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"

_UNITS_RE = re.compile(r"[0-9]+")
_RATE_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


@dataclass(frozen=True)
class LayerSpec:
    kind: str                       # "dense" or "dropout"
    units: int | None = None        # dense only
    activation: str | None = None   # dense only, one of ACTIVATIONS
    rate: float | None = None       # dropout only, in [0, 1)

    @property
    def token(self) -> str:
        """The canonical spec token of this layer (parse_spec(token) gives it back)."""
        if self.kind == "dense":
            return f"{self.units}:{self.activation}"
        return f"dropout:{self.rate!r}"


def _fail(index: int, column: int, token: str, problem: str) -> MlplabError:
    return MlplabError(f"bad model spec: layer {index} {token!r} (at character {column}): {problem}")


def parse_spec(spec) -> list[LayerSpec]:
    """Parse a spec string into LayerSpecs; raise MlplabError (one line) for anything malformed."""
    if isinstance(spec, (list, tuple)) and all(isinstance(s, LayerSpec) for s in spec):
        return _check_structure(list(spec), None)
    if not isinstance(spec, str):
        raise MlplabError(f"bad model spec: expected a string like {EXAMPLE!r}, got {type(spec).__name__}")
    if not spec.strip():
        raise MlplabError(f"bad model spec: it is empty; expected comma-separated layers like {EXAMPLE!r}")
    layers: list[LayerSpec] = []
    columns: list[int] = []
    column = 1  # 1-based character column of the current raw token
    for index, raw in enumerate(spec.split(","), start=1):
        token = raw.strip()
        col = column + (len(raw) - len(raw.lstrip()))
        column += len(raw) + 1
        if not token:
            raise MlplabError(f"bad model spec: layer {index} (at character {col}) is empty (a doubled or trailing "
                              f"comma?); expected N:ACTIVATION or dropout:RATE, e.g. {EXAMPLE!r}")
        layers.append(_parse_token(token, index, col))
        columns.append(col)
    return _check_structure(layers, columns)


def _parse_token(token: str, index: int, col: int) -> LayerSpec:
    if token.count(":") != 1:
        raise _fail(index, col, token, "expected N:ACTIVATION (e.g. 512:relu) or dropout:RATE (e.g. dropout:0.2)")
    left, right = (part.strip() for part in token.split(":"))
    if left.lower() == "dropout":
        if not _RATE_RE.fullmatch(right):
            raise _fail(index, col, token, f"dropout rate {right!r} is not a number; allowed: 0 <= rate < 1")
        rate = float(right)
        if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
            raise _fail(index, col, token, f"dropout rate {right} is out of range; allowed: 0 <= rate < 1")
        return LayerSpec("dropout", rate=rate)
    if not _UNITS_RE.fullmatch(left):
        raise _fail(index, col, token, f"{left!r} is neither a number of units (a whole number >= 1) nor 'dropout'")
    # compare digit counts first: int() refuses strings over 4,300 digits, and such a number is out of range anyway
    units = int(left) if len(left.lstrip("0")) <= len(str(MAX_UNITS)) else MAX_UNITS + 1
    if not 1 <= units <= MAX_UNITS:
        raise _fail(index, col, token, f"{units} units is out of range; allowed: 1 to {MAX_UNITS:,}")
    activation = right.lower()
    if activation not in ACTIVATIONS:
        raise _fail(index, col, token, f"unknown activation {right!r}; allowed: {', '.join(ACTIVATIONS)}")
    return LayerSpec("dense", units=units, activation=activation)


def _check_structure(layers: list[LayerSpec], columns: list[int] | None) -> list[LayerSpec]:
    def where(i: int) -> str:
        col = f" (at character {columns[i]})" if columns else ""
        return f"layer {i + 1} {layers[i].token!r}{col}"

    if not layers:
        raise MlplabError(f"bad model spec: it has no layers; expected comma-separated layers like {EXAMPLE!r}")
    for i, layer in enumerate(layers):
        if layer.kind not in ("dense", "dropout"):
            raise MlplabError(f"bad model spec: layer {i + 1} has kind {layer.kind!r}; allowed: dense, dropout")
    if layers[-1].kind == "dropout":
        raise MlplabError(f"bad model spec: {where(len(layers) - 1)}: the last layer must be dense "
                          "(the output layer, e.g. 10:softmax)")
    for i in range(1, len(layers)):
        if layers[i].kind == "dropout" and layers[i - 1].kind == "dropout":
            raise MlplabError(f"bad model spec: {where(i)}: two dropout layers in a row; "
                              "use one dropout with the combined rate")
    return layers


def layer_names(layers: list[LayerSpec]) -> list[str]:
    """Keras-style names: dense_1, dropout_1, dense_2, ... (each kind counts from 1)."""
    counts = {"dense": 0, "dropout": 0}
    names = []
    for layer in layers:
        counts[layer.kind] += 1
        names.append(f"{layer.kind}_{counts[layer.kind]}")
    return names


def canonical(layers: list[LayerSpec]) -> str:
    """The canonical spec string (no spaces, lower-case): what config.json stores."""
    return ",".join(layer.token for layer in layers)
