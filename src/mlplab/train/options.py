"""Training options, declared once: name, type, default, allowed values and help.

`TrainOptions` is the one table. The CLI builds its `mlplab train` flags from it, `--config FILE.toml` and
experiment files read its keys, the Trainer checks its arguments with `check_option`, and every way in reports
a misspelt key, a wrong type or a value out of range the same way: one line naming the option and what is
allowed. Adding an option is one field here (plus the code that uses it).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

from mlplab.errors import MlplabError

# torch keeps optimizer settings as float32 on the tensors: beyond ~3.4e38 they overflow mid-step
FLOAT32_MAX = 3.4e38
# numpy's and scikit-learn's seeds are 32-bit; the trainer uses seed+2 for its second stream
MAX_SEED = 2**32 - 3
NOTEBOOK_SPEC = "512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax"
# `--mlflow` without a value: an embedded SQLite tracking store in the current folder (one file, queryable,
# what `mlflow ui --backend-store-uri sqlite:///mlruns.db` opens), not MLflow's folder of YAML files
MLFLOW_DEFAULT_URI = "sqlite:///mlruns.db"


def _nonblank(v) -> bool:
    return v is None or (isinstance(v, str) and v.strip() != "")


def _choices(registry: str) -> tuple[str, ...]:
    """Allowed names, read from the registry that implements them (resolved late: model/optim import torch)."""
    if registry == "losses":
        from mlplab.model import LOSSES

        return tuple(LOSSES)
    if registry == "inits":
        from mlplab.model import INITS

        return tuple(INITS)
    from mlplab.train.optim import OPTIMIZERS, SCHEDULES

    return OPTIMIZERS if registry == "optimizers" else SCHEDULES


def option(default, help: str, *, check=None, allowed: str = "", choices: str | None = None,
           problem: str | None = None, flag: bool = True, resumable: bool = False, bare_value=None,
           recorded: bool = True):
    """A TrainOptions field: `check(value) -> bool` with `allowed` saying what passes, `choices` naming a
    registry of allowed names, or `problem` naming a check that explains what is wrong (_problem). `flag=False` keeps it out of `mlplab train`'s flags (TOML only). `bare_value`:
    the flag's value may be left out (`--mlflow` alone means `--mlflow <bare_value>`). `recorded=False`: not
    part of the run's recipe, so not stored in config.json (where a run logs to, not how it trains)."""
    meta = {"help": help, "check": check, "allowed": allowed, "choices": choices, "problem": problem, "flag": flag,
            "resumable": resumable, "bare_value": bare_value, "recorded": recorded}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainOptions:
    data: str = option("fashion-mnist", "Dataset name (mnist, fashion-mnist, kmnist, digits) or a path "
                       "(.npz, IDX folder, CSV, image folder).")
    model: str = option(NOTEBOOK_SPEC, "Model spec, e.g. 512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax.")
    loss: str = option("categorical_crossentropy", "Loss.", choices="losses")
    optimizer: str = option("sgd", "Optimizer.", choices="optimizers")
    lr: float = option(0.01, "Learning rate.", check=lambda v: math.isfinite(v) and 0 < v <= FLOAT32_MAX,
                       allowed=f"a number > 0 and <= {FLOAT32_MAX:g}")
    momentum: float = option(0.0, "Momentum for sgd/rmsprop.", check=lambda v: 0.0 <= v < 1.0, allowed="in [0, 1)")
    nesterov: bool = option(False, "Nesterov momentum (sgd with momentum > 0).")
    weight_decay: float = option(0.0, "L2 weight decay.", check=lambda v: math.isfinite(v) and 0 <= v <= FLOAT32_MAX,
                                 allowed=f">= 0 and <= {FLOAT32_MAX:g}")
    schedule: str = option("constant", "Learning-rate schedule.", choices="schedules")
    step_size: int = option(10, "Step schedule: epochs between drops.", check=lambda v: v >= 1, allowed=">= 1")
    gamma: float = option(0.5, "Step schedule: factor per drop.", check=lambda v: 0 < v <= 1, allowed="in (0, 1]")
    batch_size: int = option(128, "Batch size.", check=lambda v: v > 0, allowed="an integer > 0")
    epochs: int = option(20, "Train until this many epochs in total.", check=lambda v: v >= 1,
                         allowed="an integer >= 1", resumable=True)
    val_split: float = option(0.1, "Seeded stratified validation fraction (0 for none).",
                              check=lambda v: 0.0 <= v < 1.0, allowed="in [0, 1)")
    early_stop: typing.Optional[str] = option(None, "METRIC:PATIENCE, e.g. val_loss:4 (Keras EarlyStopping).")
    min_delta: float = option(0.0, "With --early-stop: smallest change that counts as an improvement.")
    restore_best: bool = option(False, "With --early-stop: keep the best epoch's weights.")
    init: str = option("glorot_uniform", "Weight initialiser.", choices="inits")
    seed: int = option(0, "One seed for initialisation, split, shuffling and dropout.",
                       check=lambda v: 0 <= v <= MAX_SEED, allowed=f"an integer from 0 to {MAX_SEED}")
    device: str = option("cpu", "cpu, cuda, cuda:N or auto.", resumable=True)
    threads: typing.Optional[int] = option(None, "CPU threads, at most the CPUs this process may use "
                                           "(default: all of them).", problem="threads", resumable=True)
    tensorboard: typing.Optional[str] = option(
        None, "Also log to TensorBoard: event files (scalars, histograms, hparams, summary, projector) under DIR.",
        check=_nonblank, allowed="a folder path", resumable=True, recorded=False)
    mlflow: typing.Optional[str] = option(
        None, f"Also log to MLflow: a tracking URI (http://HOST:PORT, sqlite:///FILE.db); alone: "
        f"{MLFLOW_DEFAULT_URI}.", check=_nonblank, allowed="a tracking URI", resumable=True,
        bare_value=MLFLOW_DEFAULT_URI, recorded=False)
    precision: str = option("fp32", "fp32; bf16: matrix products in bfloat16 with float32 accumulation, float32 "
                            "weights, optimizer state, loss and metrics (Keras's mixed_bfloat16 also accepted); "
                            "tf32: fp32 with TensorFloat-32 products on CUDA GPUs; auto: bf16 where the device "
                            "has bf16 instructions, else fp32.",
                            problem="precision")
    snapshots: typing.Optional[str] = option(
        None, "Snapshots of hidden layers for `mlplab dynamics`: every=N,layers=NAME+NAME|all,n=N, or 'default' "
        "(every=1,layers=all,n=2000). Off when not given.", check=lambda v: _check_snapshots(v),
        allowed="every=N,layers=NAME+NAME|all,n=N or default")
    test_fraction: float = option(0.2, "Test fraction for data without a test part of its own.",
                                  check=lambda v: 0.0 < v < 1.0, allowed="in (0, 1)", flag=False)
    extra: dict = field(default_factory=dict, repr=False)  # not an option: keeps unknown-but-allowed keys

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in cls.fields()]

    @classmethod
    def default(cls, name: str):
        return cls.__dataclass_fields__[name].default

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
        check_settings(where, **self.as_dict())
        from mlplab.model.precision import normalize

        self.precision = normalize(self.precision)  # Keras's names (mixed_bfloat16) stored as ours (bf16)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra", None)
        return d


def _check_snapshots(value) -> bool:
    from mlplab.train.snapshots import check_spec

    return check_spec(value)  # raises MlplabError naming the bad part


def check_settings(where: str = "options", **settings) -> None:
    """Check each given option, then the rules between options that are given together."""
    for name, value in settings.items():
        check_option(name, value, where)
    get = settings.get
    if get("nesterov") and (get("optimizer", "sgd") != "sgd" or get("momentum", 0.0) <= 0):
        raise MlplabError(f"{where}: nesterov needs optimizer sgd with momentum > 0")
    if get("momentum") and get("optimizer") in ("adam", "adamw"):
        raise MlplabError(f"{where}: momentum does not apply to {get('optimizer')} (it uses betas); "
                          f"use sgd or rmsprop")
    if "early_stop" not in settings:
        return
    if get("early_stop") is not None:
        from mlplab.train.callbacks import EarlyStopping

        monitor = EarlyStopping.from_string(get("early_stop")).monitor
        if monitor.startswith("val_") and get("val_split") == 0:
            raise MlplabError(f"{where}: early_stop {get('early_stop')!r} monitors validation data but "
                              f"val_split is 0")
    elif get("restore_best") or get("min_delta"):
        raise MlplabError(f"{where}: restore_best and min_delta only apply with early_stop "
                          f"(e.g. --early-stop val_loss:4)")


def check_option(name: str, value, where: str = "options") -> None:
    """Raise MlplabError unless `value` is allowed for option `name` (its type was checked on the way in)."""
    meta = TrainOptions.__dataclass_fields__[name].metadata
    if meta.get("choices"):
        allowed = _choices(meta["choices"])
        if value not in allowed:
            raise MlplabError(f"{where}: unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
    if meta.get("problem") and value is not None:
        problem = _problem(meta["problem"], value)
        if problem:
            raise MlplabError(f"{where}: {problem}")
    check = meta.get("check")
    if check is not None and not _passes(check, value):
        raise MlplabError(f"{where}: {name} must be {meta['allowed']} (got {value!r})")


def _problem(name: str, value) -> str | None:
    """Checks whose bound depends on the machine (resolved late: the trainer imports torch)."""
    if name == "threads":
        from mlplab.train.trainer import threads_problem

        return threads_problem(value)
    if name == "precision":
        from mlplab.model.precision import normalize

        try:
            normalize(value)
        except MlplabError as exc:
            return exc.message
        return None
    raise KeyError(name)


def _passes(check, value) -> bool:
    try:
        return bool(check(value))
    except TypeError:  # a wrong type from Python callers (the TOML/flag path coerced it already)
        return False


def allowed_values(name: str) -> str:
    """What option `name` accepts, in words (for help texts)."""
    meta = TrainOptions.__dataclass_fields__[name].metadata
    if meta.get("choices"):
        return ", ".join(_choices(meta["choices"]))
    return meta.get("allowed", "")


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
