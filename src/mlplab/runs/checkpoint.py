"""Weights and full training state in safetensors files (never pickle).

A training checkpoint is ONE file, so that a single atomic rename makes it visible: model tensors under
"model.", optimizer tensors under "optim.<param index>.<name>", RNG states under "rng.", extra tensor groups
(e.g. EarlyStopping's best weights) under "<group>.", and everything that is not a tensor (epoch, history,
optimizer hyper-parameters, callback state) as JSON in the safetensors metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mlplab.atomic import atomic_write_bytes
from mlplab.errors import MlplabError

META_KEY = "mlplab"


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def _serialise(tensors: dict, meta: dict | None) -> bytes:
    from safetensors.torch import save

    metadata = {META_KEY: json.dumps(meta, allow_nan=True)} if meta is not None else None
    return save({k: _cpu(v) for k, v in tensors.items()}, metadata=metadata)


def _read(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MlplabError(f"{path} is missing") from None
    except OSError as exc:
        raise MlplabError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        tensors = load(data)
        with safe_open(str(path), framework="pt") as fh:
            raw_meta = fh.metadata() or {}
        meta = json.loads(raw_meta[META_KEY]) if META_KEY in raw_meta else {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers and bodies
        raise MlplabError(f"{path} is not a valid safetensors file ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
    return tensors, meta


def _load_into(model: torch.nn.Module, tensors: dict, where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise MlplabError(f"{where} does not match the model: missing {missing or 'none'}, unexpected {extra or 'none'}")
    for key, ref in expected.items():
        if tuple(tensors[key].shape) != tuple(ref.shape):
            raise MlplabError(
                f"{where}: {key} has shape {tuple(tensors[key].shape)}, the model needs {tuple(ref.shape)}")
        if not torch.isfinite(tensors[key]).all():
            raise MlplabError(f"{where}: {key} contains NaN or infinite values")
    with torch.no_grad():
        for key, ref in expected.items():
            ref.copy_(tensors[key])


def save_weights(model: torch.nn.Module, path) -> Path:
    return atomic_write_bytes(path, _serialise(model.state_dict(), None))


def load_weights(model: torch.nn.Module, path) -> None:
    tensors, _ = _read(path)
    _load_into(model, tensors, Path(path))


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value  # None or plain numbers
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_state(path, *, model, optimizer, rng: dict, extra_tensors: dict, meta: dict) -> Path:
    """One file with everything needed to continue training exactly where it stopped."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_parts(optimizer)
    tensors.update(opt_tensors)
    tensors.update({f"rng.{name}": state for name, state in rng.items()})
    for group, group_tensors in extra_tensors.items():
        tensors.update({f"{group}.{k}": v for k, v in group_tensors.items()})
    return atomic_write_bytes(path, _serialise(tensors, {**meta, "optimizer": opt_meta}))


def load_training_state(path, *, model, optimizer) -> tuple[dict, dict, dict]:
    """Restore model and optimizer in place; return (rng states, extra tensor groups, metadata)."""
    path = Path(path)
    tensors, meta = _read(path)
    if "optimizer" not in meta or "epoch" not in meta:
        raise MlplabError(f"{path} is not an mlplab training checkpoint (no training metadata)")
    _load_into(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    try:
        _restore_optimizer(optimizer, tensors, meta["optimizer"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MlplabError(f"{path}: optimizer state does not fit this run ({exc})") from exc
    rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
    extra: dict = {}
    for key, value in tensors.items():
        group, _, name = key.partition(".")
        if group not in ("model", "optim", "rng"):
            extra.setdefault(group, {})[name] = value
    return rng, extra, meta
