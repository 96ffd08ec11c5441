"""Typed training options, shared by the CLI flags, `--config FILE.toml` and experiment files.

One dataclass lists every option with its type and default; flags, TOML tables and Python keyword
arguments all go through `TrainOptions.from_mapping`, so a misspelt key or a wrong type is reported the
same way everywhere: one line with the key path and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mlplab.errors import MlplabError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

FLOAT32_MAX = 3.4e38
NOTEBOOK_SPEC = "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"


@dataclass
class TrainOptions:
    data: str = "fashion-mnist"
    model: str = NOTEBOOK_SPEC
    loss: str = "categorical_crossentropy"
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    step_size: int = 10          # step schedule: epochs between drops
    gamma: float = 0.5           # step schedule: factor per drop
    batch_size: int = 128
    epochs: int = 20
    val_split: float = 0.1
    early_stop: typing.Optional[str] = None   # METRIC:PATIENCE, e.g. val_loss:4
    min_delta: float = 0.0
    restore_best: bool = False
    init: str = "glorot_uniform"
    seed: int = 0
    device: str = "cpu"
    threads: typing.Optional[int] = None
    precision: str = "fp32"      # fp32, or bf16 mixed precision (model/precision.py; Keras's mixed_bfloat16 too)
    test_fraction: float = 0.2   # for data that has no test part of its own
    extra: dict = field(default_factory=dict, repr=False)  # not an option: keeps unknown-but-allowed keys

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_mapping(cls, mapping: dict, where: str = "options", base: "TrainOptions | None" = None) -> "TrainOptions":
        values = dataclasses.asdict(base) if base is not None else {}
        values.pop("extra", None)
        hints = typing.get_type_hints(cls)
        for key, value in mapping.items():
            norm = key.replace("-", "_")
            if norm not in hints or norm == "extra":
                raise MlplabError(f"{where}: unknown key {key!r}; allowed: {', '.join(cls.keys())}")
            values[norm] = _coerce(value, hints[norm], f"{where}: {key}")
        opts = cls(**values)
        opts.validate(where)
        return opts

    def validate(self, where: str = "options") -> None:
        def bad(msg):
            raise MlplabError(f"{where}: {msg}")

        # torch keeps optimizer settings as float32 on the tensors: beyond ~3.4e38 they overflow mid-step
        if not (math.isfinite(self.lr) and 0 < self.lr <= FLOAT32_MAX):
            bad(f"lr must be a number > 0 and <= {FLOAT32_MAX:g} (got {self.lr})")
        if self.batch_size <= 0:
            bad(f"batch_size must be an integer > 0 (got {self.batch_size})")
        if self.epochs <= 0:
            bad(f"epochs must be an integer >= 1 (got {self.epochs})")
        if not (0.0 <= self.val_split < 1.0):
            bad(f"val_split must be in [0, 1) (got {self.val_split})")
        if not (0.0 < self.test_fraction < 1.0):
            bad(f"test_fraction must be in (0, 1) (got {self.test_fraction})")
        if self.threads is not None and self.threads <= 0:
            bad(f"threads must be an integer > 0 (got {self.threads})")
        if not (0.0 <= self.momentum < 1.0):
            bad(f"momentum must be in [0, 1) (got {self.momentum})")
        if not (math.isfinite(self.weight_decay) and 0 <= self.weight_decay <= FLOAT32_MAX):
            bad(f"weight_decay must be >= 0 and <= {FLOAT32_MAX:g} (got {self.weight_decay})")
        if not 0 <= self.seed < 2**32 - 2:  # numpy's and scikit-learn's seeds are 32-bit; the trainer uses seed+2
            bad(f"seed must be an integer from 0 to {2**32 - 3} (got {self.seed})")
        from mlplab.model.precision import normalize
        from mlplab.train.optim import OPTIMIZERS, SCHEDULES

        try:
            self.precision = normalize(self.precision)
        except MlplabError as exc:
            bad(str(exc))

        if self.optimizer not in OPTIMIZERS:
            bad(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            bad(f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if self.early_stop is not None:
            from mlplab.train.callbacks import EarlyStopping

            monitor = EarlyStopping.from_string(self.early_stop).monitor
            if monitor.startswith("val_") and self.val_split == 0:
                bad(f"early_stop {self.early_stop!r} monitors validation data but val_split is 0")
        elif self.restore_best or self.min_delta:
            bad("restore_best and min_delta only apply with early_stop (e.g. --early-stop val_loss:4)")

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra", None)
        return d


def _coerce(value, hint, where: str):
    """Check a TOML/flag value against the option's type; ints are accepted where floats are expected."""
    optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
    if optional:
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise MlplabError(f"{where} must be true or false (got {value!r})")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise MlplabError(f"{where} must be an integer (got {value!r})")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise MlplabError(f"{where} must be a finite number (got {value!r})")
    if hint is str:
        if isinstance(value, str):
            return value
        raise MlplabError(f"{where} must be a string (got {value!r})")
    return value


def read_toml(path) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise MlplabError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise MlplabError(f"config file {path} is a folder, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise MlplabError(f"{path} is not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MlplabError(f"cannot read {path}: {exc}") from exc


def load_train_config(path) -> TrainOptions:
    """`mlplab train --config FILE.toml`: a flat table of the same options as the flags."""
    return TrainOptions.from_mapping(read_toml(path), where=str(path))
