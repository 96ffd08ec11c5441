"""A sweep file (SWEEP.toml): the search space over the training options, checked where it enters.

    [sweep]            objective, direction-free (val_accuracy is maximised, val_loss minimised), trials, seed,
                       pruner (median, hyperband, none), time_budget (seconds of training a trial may use)
    [fixed]            options every trial shares (data, epochs, val_split, ...)
    [space]            NAME = {low, high[, log][, step]} or NAME = {choices = [...]}

A NAME is a training option (train/options.py, the one table) or a model key that builds the spec:
depth, width, width_N, dropout, dropout_N, input_dropout, activation, output (dropout_N follows hidden
layer N; input_dropout goes before the first dense layer). Every bound and choice is checked against the option's
own rules, so a trial can never be handed a value that `mlplab train` would refuse.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mlplab.errors import MlplabError
from mlplab.model.spec import ACTIVATIONS, MAX_UNITS, parse_spec
from mlplab.train.options import TrainOptions, check_option, check_settings

OBJECTIVES = ("val_accuracy", "val_loss")
PRUNERS = ("median", "hyperband", "none")
SWEEP_KEYS = ("objective", "trials", "seed", "pruner", "time_budget", "data")
# where a run logs to or runs on is not part of its recipe: not searched, not fixed per trial
NOT_SEARCHABLE = ("data", "device", "threads", "tensorboard", "mlflow")
MAX_DEPTH = 16
MODEL_KEYS = ("depth", "width", "dropout", "input_dropout", "activation", "output")
_NUMBERED = re.compile(r"(width|dropout)_([1-9][0-9]?)")
DIST_KEYS = ("low", "high", "log", "step", "choices")


def _model_key_kind(name: str):
    """(type, check, allowed) of a model key, or None when `name` is not one."""
    m = _NUMBERED.fullmatch(name)
    base = m.group(1) if m else name
    if m and int(m.group(2)) > MAX_DEPTH:
        return None
    kinds = {
        "depth": (int, lambda v: 1 <= v <= MAX_DEPTH, f"an integer from 1 to {MAX_DEPTH}"),
        "width": (int, lambda v: 1 <= v <= MAX_UNITS, f"an integer from 1 to {MAX_UNITS:,}"),
        "dropout": (float, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
        "input_dropout": (float, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
        "activation": (str, lambda v: v in ACTIVATIONS, f"one of: {', '.join(ACTIVATIONS)}"),
        "output": (str, lambda v: _is_dense_token(v), "a dense layer N:ACTIVATION, e.g. 10:softmax"),
    }
    return kinds.get(base)


def _is_dense_token(v) -> bool:
    try:
        layers = parse_spec(v)
    except MlplabError:
        return False
    return len(layers) == 1 and layers[0].kind == "dense"


def _allowed_names() -> str:
    return ", ".join([k for k in TrainOptions.keys() if k not in NOT_SEARCHABLE] + list(MODEL_KEYS)
                     + ["width_N", "dropout_N"])


def _type_of(name: str):
    kind = _model_key_kind(name)
    if kind is not None:
        return kind[0]
    hint = typing.get_type_hints(TrainOptions)[name]
    if typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def check_value(name: str, value, where: str):
    """Type and range of one value of option/model key `name`; returns it coerced (int -> float where needed)."""
    kind = _type_of(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok_type = (isinstance(value, kind) and not (kind is int and isinstance(value, bool))
               and not (kind is float and not math.isfinite(value)))
    if not ok_type:
        names = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}
        raise MlplabError(f"{where}: {name} must be {names.get(kind, kind.__name__)} (got {value!r})")
    model_kind = _model_key_kind(name)
    if model_kind is not None:
        if not model_kind[1](value):
            raise MlplabError(f"{where}: {name} must be {model_kind[2]} (got {value!r})")
    elif name == "model":
        parse_spec(value)
    else:
        check_option(name, value, where)
    return value


@dataclass(frozen=True)
class Param:
    name: str
    kind: type                      # int, float, str, bool
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple | None = None


@dataclass
class SweepSpec:
    path: Path | None
    objective: str = "val_accuracy"
    trials: int = 20
    seed: int = 0
    pruner: str = "median"
    time_budget: float | None = None
    data: str | None = None
    fixed: dict = field(default_factory=dict)
    params: list[Param] = field(default_factory=list)

    @property
    def direction(self) -> str:
        return "maximize" if self.objective == "val_accuracy" else "minimize"

    def fingerprint(self) -> str:
        """Identifies the search (space, fixed values, objective): a study may only be continued with the same."""
        doc = {"objective": self.objective, "time_budget": self.time_budget, "fixed": self.fixed,
               "params": [dict(p.__dict__, kind=p.kind.__name__) for p in self.params]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=list).encode()).hexdigest()[:16]

    def uses_model_keys(self) -> bool:
        names = {p.name for p in self.params} | set(self.fixed)
        return any(_model_key_kind(n) is not None for n in names)


def load_sweep(path) -> SweepSpec:
    from mlplab.runs.config import data_relative_to, read_toml

    path = Path(path)
    doc = read_toml(path)
    spec = parse_sweep(doc, str(path))
    if spec.data is not None:
        spec.data = data_relative_to(spec.data, path.parent)
    if "data" in spec.fixed:
        spec.fixed["data"] = data_relative_to(spec.fixed["data"], path.parent)
    spec.path = path
    return spec


def parse_sweep(doc: dict, where: str = "sweep") -> SweepSpec:
    unknown = set(doc) - {"sweep", "fixed", "space"}
    if unknown:
        raise MlplabError(f"{where}: unknown table {sorted(unknown)[0]!r}; allowed: sweep, fixed, space")
    spec = SweepSpec(path=None)
    sweep = _table(doc, "sweep", where)
    for key, value in sweep.items():
        w = f"{where}: [sweep] {key}"
        if key not in SWEEP_KEYS:
            raise MlplabError(f"{where}: [sweep] unknown key {key!r}; allowed: {', '.join(SWEEP_KEYS)}")
        if key == "objective":
            if value not in OBJECTIVES:
                raise MlplabError(f"{w}: unknown objective {value!r}; choose one of: {', '.join(OBJECTIVES)}")
        elif key == "pruner":
            if value not in PRUNERS:
                raise MlplabError(f"{w}: unknown pruner {value!r}; choose one of: {', '.join(PRUNERS)}")
        elif key in ("trials", "seed"):
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "trials" else 0) \
                    or value > 2**31:
                raise MlplabError(f"{w} must be an integer >= {1 if key == 'trials' else 0} (got {value!r})")
        elif key == "time_budget":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise MlplabError(f"{w} must be a number of seconds > 0 (got {value!r})")
            value = float(value)
        elif key == "data":
            check_value("data", value, w)
        setattr(spec, key, value)

    for key, value in _table(doc, "fixed", where).items():
        name = _name(key, f"{where}: [fixed]", fixed=True)
        spec.fixed[name] = check_value(name, value, f"{where}: [fixed]")
    for key, value in _table(doc, "space", where).items():
        name = _name(key, f"{where}: [space]", fixed=False)
        if name in spec.fixed:
            raise MlplabError(f"{where}: {name} is both fixed and searched; keep it in one of [fixed], [space]")
        spec.params.append(_param(name, value, f"{where}: [space] {name}"))
    if not spec.params:
        raise MlplabError(f"{where}: [space] is empty; give at least one option to search, e.g. "
                          "lr = {low = 0.001, high = 0.3, log = true}")
    _check_together(spec, where)
    return spec


def _table(doc, name, where) -> dict:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise MlplabError(f"{where}: {name} must be a table ([{name}])")
    return value


def _name(key: str, where: str, *, fixed: bool) -> str:
    name = key.replace("-", "_")
    if name in TrainOptions.keys() or name == "model" or _model_key_kind(name) is not None:
        if name in NOT_SEARCHABLE and not (fixed and name == "data"):
            raise MlplabError(f"{where}: {key!r} cannot be searched{'' if fixed else ''} (where a trial runs is "
                              "not part of its recipe); give it on the command line (--data, --threads)")
        return name
    raise MlplabError(f"{where}: unknown option {key!r}; allowed: {_allowed_names()}")


def _param(name: str, value, where: str) -> Param:
    kind = _type_of(name)
    if not isinstance(value, dict):
        raise MlplabError(f"{where} must be a table: {{low = ..., high = ...[, log = true]}} or "
                          f"{{choices = [...]}} (got {value!r})")
    extra = set(value) - set(DIST_KEYS)
    if extra:
        raise MlplabError(f"{where}: unknown key {sorted(extra)[0]!r}; allowed: {', '.join(DIST_KEYS)}")
    if "choices" in value:
        if set(value) - {"choices"}:
            raise MlplabError(f"{where}: give either choices or low/high, not both")
        choices = value["choices"]
        if not isinstance(choices, list):
            raise MlplabError(f"{where}: choices must be a list (got {choices!r})")
        if not choices:
            raise MlplabError(f"{where}: choices is empty; give at least one value")
        checked = tuple(check_value(name, c, where) for c in choices)
        if len(set(checked)) != len(checked):
            raise MlplabError(f"{where}: choices has a value twice ({list(checked)!r})")
        return Param(name, kind, choices=checked)
    if kind not in (int, float):
        raise MlplabError(f"{where}: {name} is not a number; give choices = [...]")
    if "low" not in value or "high" not in value:
        raise MlplabError(f"{where}: a range needs both low and high (e.g. {{low = 0.001, high = 0.3}})")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise MlplabError(f"{where}: log must be true or false (got {log!r})")
    low, high = value["low"], value["high"]
    # the shape of the range first (its message says more than an endpoint's own rule would)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if numbers and low > high:
        raise MlplabError(f"{where}: low {low!r} > high {high!r}; low must be <= high")
    if numbers and log and low <= 0:
        raise MlplabError(f"{where}: a log range needs low > 0 (got low {low!r}: the range would pass through "
                          "0)")
    low = check_value(name, low, f"{where} low")
    high = check_value(name, high, f"{where} high")
    step = value.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not (0 < step < math.inf) \
                or (kind is int and not isinstance(step, int)):
            raise MlplabError(f"{where}: step must be a {'whole ' if kind is int else ''}number > 0 (got {step!r})")
        if log:
            raise MlplabError(f"{where}: step and log cannot be used together")
    return Param(name, kind, low=low, high=high, log=log, step=step)


def _check_together(spec: SweepSpec, where: str) -> None:
    names = {p.name for p in spec.params} | set(spec.fixed)
    if "model" in names and spec.uses_model_keys():
        raise MlplabError(f"{where}: give the model either as model (a spec) or through depth/width/dropout keys, "
                          "not both")
    val = spec.fixed.get("val_split", TrainOptions.default("val_split"))
    vp = next((p for p in spec.params if p.name == "val_split"), None)
    if (vp is None and val == 0) or (vp is not None and (vp.choices and 0 in vp.choices or vp.low == 0)):
        raise MlplabError(f"{where}: the objective {spec.objective} needs validation data; val_split must be > 0")
    if "depth" not in names and any(_NUMBERED.fullmatch(n) for n in names):
        raise MlplabError(f"{where}: width_N and dropout_N need depth (the number of hidden layers)")
    # the rules between options, when none of those options is searched (otherwise the sampler leaves out what
    # does not apply to the values it drew: momentum for adam, nesterov without momentum)
    related = {"optimizer", "momentum", "nesterov", "early_stop", "val_split", "restore_best", "min_delta"}
    if not related & {p.name for p in spec.params}:
        plain = {k: v for k, v in spec.fixed.items() if k in TrainOptions.keys() and k != "model"}
        check_settings(f"{where}: [fixed]", **plain)


def model_spec(values: dict) -> str | None:
    """The model spec from the model keys in `values` (None when there are none)."""
    if not any(_model_key_kind(k) is not None for k in values):
        return None
    depth = int(values.get("depth", 2))
    layers = []
    if values.get("input_dropout", 0.0) > 0:
        layers.append(f"dropout:{values['input_dropout']!r}")
    for i in range(1, depth + 1):
        width = int(values.get(f"width_{i}", values.get("width", 512)))
        layers.append(f"{width}:{values.get('activation', 'relu')}")
        rate = float(values.get(f"dropout_{i}", values.get("dropout", 0.0)))
        if rate > 0:
            layers.append(f"dropout:{rate!r}")
    layers.append(values.get("output", "10:softmax"))
    return ",".join(layers)


def trial_options(values: dict) -> dict:
    """Training options (a mapping for TrainOptions.from_mapping) from fixed + sampled values."""
    out = {k: v for k, v in values.items() if _model_key_kind(k) is None}
    spec = model_spec(values)
    if spec is not None:
        out["model"] = spec
    return out
