"""Read a trained Keras MLP (`.keras` zip or legacy `.h5`) without Keras: its JSON config and weight arrays only.

A model file is untrusted input. Nothing in it is executed or unpickled: the config is parsed as JSON, the arrays
are read with h5py after their shapes and types are checked against the config, and anything outside the supported
layer set (InputLayer, Flatten, Dense, Dropout, Activation) is refused by name before a byte of weights is read.
`import_keras` turns the model into a complete run folder (config, weights, summary, test metrics, manifest),
written into a temporary folder and renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mlplab.errors import MlplabError
from mlplab.model.spec import ACTIVATIONS, MAX_UNITS, LayerSpec, canonical, layer_names

SUPPORTED_LAYERS = ("InputLayer", "Flatten", "Dense", "Dropout", "Activation")
_SUPPORTED_TEXT = ", ".join(SUPPORTED_LAYERS)
_MODEL_CLASSES = ("Sequential", "Functional", "Model")
# Keras 3 files a layer's weights under layers/<snake_case(class name)>[_<n>], counted in model.layers order (not
# under the layer's name: keras/src/saving/saving_lib.py, _save_container_state)
_SNAKE = {"InputLayer": "input_layer", "Flatten": "flatten", "Dense": "dense", "Dropout": "dropout",
          "Activation": "activation"}
MAX_CONFIG_BYTES = 16 * 2**20   # an MLP's config is a few kB; this bounds what a hostile file makes us parse
_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_INSTALL_HINT = "reading Keras files needs h5py: pip install 'mlplab[keras]'"
# Keras loss names (strings or class names) -> mlplab's loss, used for the imported run's test loss
_LOSSES = {
    "sparse_categorical_crossentropy": "categorical_crossentropy",
    "categorical_crossentropy": "categorical_crossentropy",
    "sparsecategoricalcrossentropy": "categorical_crossentropy",
    "categoricalcrossentropy": "categorical_crossentropy",
    "binary_crossentropy": "binary_crossentropy",
    "binarycrossentropy": "binary_crossentropy",
    "mse": "mse", "mean_squared_error": "mse", "meansquarederror": "mse",
}


@dataclass
class KerasModel:
    """What a Keras file holds, in mlplab's terms: layers, input shape and Keras-order weights."""

    layers: list[LayerSpec]
    input_shape: tuple[int, ...]
    weights: list[np.ndarray]                 # [W_1 (in, out), b_1 (out,), ...] float32, Keras's order and layout
    notes: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)  # path, format, sha256, keras_version, backend, model class/name
    keras_names: dict = field(default_factory=dict)  # mlplab layer name -> Keras layer name
    loss: str | None = None

    @property
    def spec(self) -> str:
        return canonical(self.layers)

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)


@dataclass
class ImportResult:
    path: Path
    spec: str
    metrics: dict
    notes: list[str]


def _h5py():
    try:
        import h5py
    except ImportError:
        raise MlplabError(_INSTALL_HINT) from None
    return h5py


# --- the config ---------------------------------------------------------------------------------------------

@dataclass
class _Layer:
    kind: str                  # dense, dropout
    keras_name: str
    units: int | None = None
    activation: str | None = None
    use_bias: bool = True
    rate: float | None = None
    folded: str | None = None  # name of an Activation layer folded into this dense layer
    weights_key: str = ""      # its group under layers/ in a .keras weights file (see _weights_keys)


def _text(value, limit: int = 200) -> str:
    """A value from the file, made safe to put into a one-line message."""
    s = value if isinstance(value, str) else json.dumps(value, default=str)
    s = "".join(ch if ch.isprintable() else "?" for ch in s)
    return s if len(s) <= limit else s[:limit] + "..."


def _loads(raw: bytes | str, where: str):
    if len(raw) > MAX_CONFIG_BYTES:
        raise MlplabError(f"{where} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; not a Keras MLP config")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MlplabError(f"{where} is not valid JSON ({_text(str(exc).splitlines()[0] if str(exc) else exc, 120)})") from None


def _layer_name(entry: dict, index: int) -> str:
    cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    name = cfg.get("name", entry.get("name"))
    return _text(name, 80) if isinstance(name, str) and name else f"#{index + 1}"


def _is_custom(entry: dict) -> str | None:
    """The registered name of a custom (user-code) object, or None for Keras's own classes."""
    registered = entry.get("registered_name")
    module = entry.get("module")
    if isinstance(registered, str) and registered and registered != entry.get("class_name"):
        return registered
    if isinstance(module, str) and module and not (module == "keras" or module.startswith("keras.")):
        return f"{module}.{entry.get('class_name')}"
    return None


def _refuse_layer(entry: dict, index: int, where: str) -> MlplabError:
    name = _layer_name(entry, index)
    cls = _text(entry.get("class_name"), 60)
    if cls == "Lambda":
        why = "Lambda layers hold Python code, and mlplab never runs code from a model file"
    elif _is_custom(entry):
        why = (f"it is a custom object ({_text(_is_custom(entry), 80)}) defined by user code, which mlplab never "
               "runs from a model file")
    elif cls in _MODEL_CLASSES:
        why = "nested models are not supported (flatten it into one Sequential model)"
    else:
        why = "mlplab imports only MLPs"
    return MlplabError(f"{where}: layer {name!r} ({cls}) cannot be imported: {why}; supported layers: "
                       f"{_SUPPORTED_TEXT}")


def _activation(value, layer: str, where: str) -> str:
    if value is None:
        return "linear"
    if isinstance(value, dict):  # Keras 3 serialises built-in functions as strings; a dict is a custom one
        raise MlplabError(f"{where}: layer {layer!r} uses a custom activation ({_text(value.get('config') or value, 80)}); "
                          f"supported: {', '.join(ACTIVATIONS)}")
    if not isinstance(value, str) or value.lower() not in ACTIVATIONS:
        raise MlplabError(f"{where}: layer {layer!r} has activation {_text(value, 60)!r}; supported: "
                          f"{', '.join(ACTIVATIONS)}")
    return value.lower()


def _shape(value, layer: str, where: str) -> tuple[int, ...]:
    """A batch shape [None, d1, ...] -> (d1, ...); every size must be known."""
    if not isinstance(value, list) or len(value) < 2 or len(value) > 8:
        raise MlplabError(f"{where}: layer {layer!r} has input shape {_text(value, 60)}; expected [None, size, ...]")
    dims = value[1:]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise MlplabError(f"{where}: layer {layer!r} has input shape {_text(value, 60)}: every size after the batch "
                          "must be a whole number >= 1 (mlplab needs a fixed input size)")
    return tuple(dims)


def _input_shape_of(entry: dict, name: str, where: str):
    cfg = entry.get("config") or {}
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            return _shape(cfg[key], name, where)
    if entry.get("class_name") == "InputLayer" and cfg.get("shape") is not None:  # Keras 3 also accepts shape=
        return _shape([None, *cfg["shape"]] if isinstance(cfg["shape"], list) else cfg["shape"], name, where)
    return None


def _check_dense_config(cfg: dict, name: str, where: str) -> None:
    # Settings that change what the stored arrays mean: refused rather than silently misread.
    if cfg.get("lora_rank"):
        raise MlplabError(f"{where}: layer {name!r} has LoRA weights (lora_rank={_text(cfg['lora_rank'])}); merge them "
                          "into the kernel before saving (supported: plain Dense)")
    if cfg.get("quantization_config") is not None:
        raise MlplabError(f"{where}: layer {name!r} is quantized; supported: float16/32/64 Dense weights")
    dtype = cfg.get("dtype")
    policy = dtype.get("config", {}).get("name") if isinstance(dtype, dict) and isinstance(dtype.get("config"), dict) \
        else dtype
    if isinstance(policy, str) and any(q in policy for q in ("int8", "int4", "float8")):
        raise MlplabError(f"{where}: layer {name!r} is quantized ({_text(policy, 40)}); supported: float16/32/64 "
                          "Dense weights")


def _chain(model_cfg: dict, where: str) -> list[dict]:
    """The layers of a functional model in call order; refuse anything that is not one straight chain."""
    layers = model_cfg.get("layers")
    if not isinstance(layers, list) or not all(isinstance(e, dict) for e in layers):
        raise MlplabError(f"{where}: the model config has no list of layers")
    by_name: dict[str, dict] = {}
    for i, entry in enumerate(layers):
        name = entry.get("name") or (entry.get("config") or {}).get("name")
        if not isinstance(name, str) or name in by_name:
            raise MlplabError(f"{where}: layer #{i + 1} has a missing or repeated name")
        by_name[name] = entry

    def endpoints(key) -> list[str]:
        value = model_cfg.get(key)
        if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
            value = [value]  # Keras 3 writes a single input as [name, 0, 0]
        if not isinstance(value, list) or not all(isinstance(v, list) and v and isinstance(v[0], str) for v in value):
            raise MlplabError(f"{where}: the model config's {key} is malformed")
        return [v[0] for v in value]

    inputs, outputs = endpoints("input_layers"), endpoints("output_layers")
    if len(inputs) != 1 or len(outputs) != 1:
        raise MlplabError(f"{where}: the model has {len(inputs)} inputs and {len(outputs)} outputs; mlplab imports "
                          "a chain of layers with one input and one output")
    parent: dict[str, str] = {}
    for name, entry in by_name.items():
        nodes = entry.get("inbound_nodes") or []
        if not isinstance(nodes, list):
            raise MlplabError(f"{where}: layer {_text(name, 80)!r} has malformed inbound nodes")
        if len(nodes) > 1:
            raise MlplabError(f"{where}: layer {_text(name, 80)!r} is called {len(nodes)} times (a shared layer); "
                              "mlplab imports a single chain of layers")
        sources = _sources(nodes, where) if nodes else []
        if len(sources) > 1:
            raise MlplabError(f"{where}: layer {_text(name, 80)!r} takes {len(sources)} inputs "
                              f"({', '.join(_text(s, 40) for s in sources)}); mlplab imports a single chain of layers")
        if sources:
            parent[name] = sources[0]
    children: dict[str, str] = {}
    for child, src in parent.items():
        if src not in by_name:
            raise MlplabError(f"{where}: layer {_text(child, 80)!r} takes input from an unknown layer {_text(src, 80)!r}")
        if src in children:
            raise MlplabError(f"{where}: layer {_text(src, 80)!r} feeds both {_text(children[src], 80)!r} and "
                              f"{_text(child, 80)!r}; mlplab imports a single chain of layers")
        children[src] = child
    order, name = [], inputs[0]
    while True:
        if name not in by_name or name in order:
            raise MlplabError(f"{where}: the model's layers do not form a chain from input to output")
        order.append(name)
        if name == outputs[0]:
            break
        if name not in children:
            raise MlplabError(f"{where}: the chain from the input stops at layer {_text(name, 80)!r} before the output")
        name = children[name]
    if len(order) != len(by_name):
        unused = sorted(set(by_name) - set(order))
        raise MlplabError(f"{where}: layer {_text(unused[0], 80)!r} is not on the path from input to output; mlplab "
                          "imports a single chain of layers")
    return [by_name[n] for n in order]


def _sources(nodes, where: str) -> list[str]:
    """Names of the layers whose outputs a layer's inbound nodes read (Keras 2 and Keras 3 formats)."""
    found: list[str] = []

    def walk(x, depth):
        if depth > 32:
            raise MlplabError(f"{where}: inbound nodes are nested too deeply")
        if isinstance(x, dict):
            history = (x.get("config") or {}).get("keras_history") if x.get("class_name") == "__keras_tensor__" \
                else None
            if isinstance(history, list) and history and isinstance(history[0], str):
                found.append(history[0])
                return
            for v in x.values():
                walk(v, depth + 1)
        elif isinstance(x, list):
            # Keras 2: [layer_name, node_index, tensor_index, kwargs]
            if len(x) >= 3 and isinstance(x[0], str) and isinstance(x[1], int) and isinstance(x[2], int):
                found.append(x[0])
                return
            for v in x:
                walk(v, depth + 1)

    walk(nodes, 0)
    return list(dict.fromkeys(found))


def parse_model_config(config, where: str) -> tuple[list[_Layer], tuple[int, ...] | None, list[str], dict]:
    """Keras model config -> (dense/dropout layers, input shape or None, notes, facts); no weights are touched."""
    if not isinstance(config, dict):
        raise MlplabError(f"{where}: the model config is not a JSON object")
    cls = config.get("class_name")
    if cls not in _MODEL_CLASSES or _is_custom(config):
        if isinstance(cls, str) and cls in SUPPORTED_LAYERS:
            raise MlplabError(f"{where}: the file holds a single {cls} layer, not a model")
        custom = _is_custom(config)
        detail = f" (custom class {_text(custom, 80)})" if custom else ""
        raise MlplabError(f"{where}: model class {_text(cls, 60)!r}{detail} is not supported; mlplab imports "
                          "Sequential models and functional models that are one chain of layers")
    model_cfg = config.get("config")
    if isinstance(model_cfg, list):  # Keras 2.2-era Sequential: the config is the list of layers
        model_cfg = {"layers": model_cfg}
    if not isinstance(model_cfg, dict):
        raise MlplabError(f"{where}: the model config has no 'config' object")
    if cls == "Sequential":
        entries = model_cfg.get("layers")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise MlplabError(f"{where}: the Sequential config has no list of layers")
        keys = _weights_keys([e for e in entries if e.get("class_name") != "InputLayer"], where)
    else:
        entries = model_cfg.get("layers")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise MlplabError(f"{where}: the functional model's config has no list of layers")
        # first: an unsupported layer is named before the shape of the graph is judged
        keys = _weights_keys(entries, where)  # a functional model's layers include its InputLayer
        entries = _chain(model_cfg, where)

    input_shape = None
    build = config.get("build_config") or model_cfg.get("build_input_shape")
    if isinstance(build, dict) and build.get("input_shape") is not None:
        input_shape = _shape(build["input_shape"], "(model)", where)
    elif isinstance(build, list):
        input_shape = _shape(build, "(model)", where)
    flat = input_shape is None or len(input_shape) == 1   # does the next Dense see a flat vector?
    layers: list[_Layer] = []
    notes: list[str] = []
    for i, entry in enumerate(entries):
        cls_i = entry.get("class_name")
        name = _layer_name(entry, i)
        if cls_i not in SUPPORTED_LAYERS or _is_custom(entry):
            raise _refuse_layer(entry, i, where)
        cfg = entry.get("config")
        if not isinstance(cfg, dict):
            raise MlplabError(f"{where}: layer {name!r} ({cls_i}) has no config object")
        shape = _input_shape_of(entry, name, where)
        if shape is not None:
            if layers:
                raise MlplabError(f"{where}: layer {name!r} sets an input shape but is not the first layer")
            input_shape, flat = shape, len(shape) == 1
        if cls_i == "InputLayer":
            if layers:
                raise MlplabError(f"{where}: InputLayer {name!r} is not the first layer")
        elif cls_i == "Flatten":
            flat = True
        elif cls_i == "Dense":
            if not flat:
                raise MlplabError(f"{where}: Dense layer {name!r} receives inputs of shape {input_shape}; mlplab's "
                                  "layers take flat vectors: put a Flatten layer before it")
            units = cfg.get("units")
            if not isinstance(units, int) or isinstance(units, bool) or not 1 <= units <= MAX_UNITS:
                raise MlplabError(f"{where}: Dense layer {name!r} has units={_text(units, 40)}; allowed: a whole number "
                                  f"from 1 to {MAX_UNITS:,}")
            _check_dense_config(cfg, name, where)
            use_bias = cfg.get("use_bias", True)
            if not isinstance(use_bias, bool):
                raise MlplabError(f"{where}: Dense layer {name!r} has use_bias={_text(use_bias, 40)}; expected true/false")
            layers.append(_Layer("dense", name, units=units, activation=_activation(cfg.get("activation"), name, where),
                                 use_bias=use_bias, weights_key=keys[id(entry)]))
        elif cls_i == "Dropout":
            rate = cfg.get("rate")
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (math.isfinite(rate)
                                                                                    and 0 <= rate < 1):
                raise MlplabError(f"{where}: Dropout layer {name!r} has rate={_text(rate, 40)}; allowed: 0 <= rate < 1")
            layers.append(_Layer("dropout", name, rate=float(rate)))
        else:  # Activation
            act = _activation(cfg.get("activation"), name, where)
            if act == "linear":
                notes.append(f"Keras layer {name!r} (Activation linear) does nothing and was left out")
                continue
            prev = layers[-1] if layers else None
            if prev is None or prev.kind != "dense" or prev.activation != "linear" or prev.folded:
                raise MlplabError(f"{where}: Activation layer {name!r} ({act}) must directly follow a Dense layer "
                                  "with the linear activation (mlplab folds it into that layer)")
            prev.activation, prev.folded = act, name
    layers = _tidy_dropout(layers, notes)
    if not any(layer.kind == "dense" for layer in layers):
        raise MlplabError(f"{where}: the model has no Dense layer; mlplab imports MLPs (supported layers: "
                          f"{_SUPPORTED_TEXT})")
    facts = {"model_class": _text(cls, 40), "model_name": _text(model_cfg.get("name", ""), 80)}
    return layers, input_shape, notes, facts


def _weights_keys(entries: list[dict], where: str) -> dict[int, str]:
    """id(layer entry) -> its group name under layers/ in model.weights.h5."""
    used: dict[str, int] = {}
    keys = {}
    for i, entry in enumerate(entries):
        base = _SNAKE.get(entry.get("class_name"))
        if base is None or _is_custom(entry):
            raise _refuse_layer(entry, i, where)
        keys[id(entry)] = base if base not in used else f"{base}_{used[base] + 1}"
        used[base] = used.get(base, -1) + 1
    return keys


def _tidy_dropout(layers: list[_Layer], notes: list[str]) -> list[_Layer]:
    """Dropout where mlplab's spec has none (before the first or after the last Dense, or twice in a row)."""
    out: list[_Layer] = []
    for layer in layers:
        if layer.kind == "dropout" and not out:
            notes.append(f"Keras layer {layer.keras_name!r} (Dropout on the input) was left out: mlplab's spec starts "
                         "with a dense layer, and dropout does nothing at inference")
        elif layer.kind == "dropout" and out[-1].kind == "dropout":
            a, b = out[-1].rate, layer.rate
            out[-1].rate = 1.0 - (1.0 - a) * (1.0 - b)
            notes.append(f"Keras layers {out[-1].keras_name!r} and {layer.keras_name!r} (two Dropout layers in a row) "
                         f"were merged into one with rate {out[-1].rate:.6g}")
        else:
            out.append(layer)
    while out and out[-1].kind == "dropout":
        notes.append(f"Keras layer {out[-1].keras_name!r} (Dropout after the output layer) was left out: it does "
                     "nothing at inference")
        out.pop()
    return out


# --- the weights --------------------------------------------------------------------------------------------

def _resolve(h5py, root, path: str, where: str):
    """root[path], following hard links only: a soft or external link could point anywhere, even another file."""
    obj = root
    for part in [p for p in path.split("/") if p]:
        if not isinstance(obj, h5py.Group):
            return None
        link = obj.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise MlplabError(f"{where}: {path!r} is a {type(link).__name__} (a link to elsewhere); refused")
        obj = obj[part]
    return obj


def _read_array(h5py, ds, want: tuple[int, ...], what: str, where: str) -> np.ndarray:
    if not isinstance(ds, h5py.Dataset):
        raise MlplabError(f"{where}: {what} is missing")
    if ds.is_virtual or ds.id.get_create_plist().get_external_count() > 0:
        raise MlplabError(f"{where}: {what} is stored outside the file (external or virtual dataset); refused")
    if tuple(ds.shape) != want:
        raise MlplabError(f"{where}: {what} has shape {tuple(ds.shape)}, the config says {want}")
    if ds.dtype.kind != "f" or ds.dtype.itemsize not in (2, 4, 8):
        raise MlplabError(f"{where}: {what} has dtype {ds.dtype}; supported: float16, float32, float64")
    arr = np.asarray(ds[()], dtype=np.float32)
    if not np.isfinite(arr).all():
        raise MlplabError(f"{where}: {what} contains NaN or infinite values")
    return arr


class _KerasV3Weights:
    """model.weights.h5 of the .keras format: layers/<name>/vars/<0, 1, ...>."""

    def __init__(self, h5py, f, where):
        self.h5py, self.f, self.where = h5py, f, where

    def datasets(self, layer: _Layer) -> list:
        name = layer.keras_name
        for prefix in ("layers", "_layer_checkpoint_dependencies"):  # the second: tf.keras 2.13-2.15 files
            group = _resolve(self.h5py, self.f, f"{prefix}/{layer.weights_key}/vars", self.where)
            if group is not None:
                break
        else:
            raise MlplabError(f"{self.where}: the weights of layer {name!r} are missing")
        if not isinstance(group, self.h5py.Group):
            raise MlplabError(f"{self.where}: the weights of layer {name!r} are not a group")
        keys = sorted(group.keys(), key=lambda k: (len(k), k))
        if keys != [str(i) for i in range(len(keys))]:
            raise MlplabError(f"{self.where}: layer {name!r} has unexpected weight entries {_text(keys, 80)}")
        return [(f"{name} weight {k}", _resolve(self.h5py, group, k, self.where)) for k in keys]


class _LegacyH5Weights:
    """Legacy HDF5: model_weights/<layer>/ with attribute weight_names, e.g. ['sequential/dense/kernel', ...]."""

    def __init__(self, h5py, f, where):
        self.h5py, self.where = h5py, where
        self.root = _resolve(h5py, f, "model_weights", where)
        if not isinstance(self.root, h5py.Group):
            raise MlplabError(f"{where}: the file has a model config but no model_weights group")

    def datasets(self, layer: _Layer) -> list:
        name = layer.keras_name
        group = _resolve(self.h5py, self.root, name, self.where) if "/" not in name else None
        if not isinstance(group, self.h5py.Group):
            raise MlplabError(f"{self.where}: the weights of layer {name!r} are missing")
        names = group.attrs.get("weight_names", [])
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in np.asarray(names).ravel()]
        # kernel first, then bias, whatever order the file lists them in
        names.sort(key=lambda n: (0 if n.rsplit("/", 1)[-1].startswith("kernel") else 1, n))
        return [(f"{name} {n.rsplit('/', 1)[-1]}", _resolve(self.h5py, group, n, self.where)) for n in names]


def _read_weights(h5py, store, layers: list[_Layer], input_dim: int, where: str, notes: list[str]) -> list[np.ndarray]:
    weights, width = [], input_dim
    for layer in layers:
        if layer.kind != "dense":
            continue
        entries = store.datasets(layer)
        want = 2 if layer.use_bias else 1
        if len(entries) != want:
            raise MlplabError(f"{where}: Dense layer {layer.keras_name!r} has {len(entries)} weight arrays; the config "
                              f"({'with' if layer.use_bias else 'without'} bias) needs {want}")
        (kname, kds), *rest = entries
        weights.append(_read_array(h5py, kds, (width, layer.units), f"{kname} (kernel)", where))
        if layer.use_bias:
            bname, bds = rest[0]
            weights.append(_read_array(h5py, bds, (layer.units,), f"{bname} (bias)", where))
        else:
            weights.append(np.zeros(layer.units, dtype=np.float32))
            notes.append(f"Keras layer {layer.keras_name!r} has no bias; mlplab's dense layers always have one, so it "
                         "was imported as zeros (predictions are exactly the same)")
        width = layer.units
    return weights


def _first_kernel_rows(h5py, store, layers: list[_Layer]) -> int | None:
    """Input size from the first kernel's shape (metadata only) when the config does not state it."""
    first = next(layer for layer in layers if layer.kind == "dense")
    entries = store.datasets(first)
    ds = entries[0][1] if entries else None
    if isinstance(ds, h5py.Dataset) and len(ds.shape) == 2 and ds.shape[0] >= 1:
        return int(ds.shape[0])
    return None


# --- the file -----------------------------------------------------------------------------------------------

def _loss_name(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("class_name") or (value.get("config") or {}).get("name")
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return _LOSSES.get(value.lower()) if isinstance(value, str) else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_keras(path) -> KerasModel:
    """Read a `.keras` or legacy `.h5` Keras model file; MlplabError (one line) for anything else."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise MlplabError(f"model file {path} does not exist")
    if not path.is_file():
        raise MlplabError(f"{path} is not a file; expected a Keras model file (.keras or .h5)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise MlplabError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head.startswith(_ZIP_MAGIC):
        fmt = "keras"
    elif head == _HDF5_MAGIC:
        fmt = "h5"
    else:
        raise MlplabError(f"{path} is not a Keras model file: expected a .keras (zip) file or a legacy .h5 (HDF5) file")
    h5py = _h5py()
    try:
        if fmt == "keras":
            km = _read_keras_zip(h5py, path, where)
        else:
            km = _read_legacy_h5(h5py, path, where)
    except MlplabError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        # h5py and zipfile report damaged files with these; the first line names the problem
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise MlplabError(f"{path} is damaged or not a Keras model file ({type(exc).__name__}: {_text(detail, 160)})") \
            from exc
    km.source.update(path=str(path.resolve()), format=fmt, sha256=_sha256(path), size_bytes=path.stat().st_size)
    return km


def _zip_member(zf: zipfile.ZipFile, name: str, limit: int, where: str) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise MlplabError(f"{where}: {name} is {info.file_size:,} bytes; more than {limit:,} is not an MLP config")
    with zf.open(info) as fh:
        data = fh.read(limit + 1)  # the size in the header may lie; never read more than the limit
    if len(data) > limit:
        raise MlplabError(f"{where}: {name} is larger than {limit:,} bytes")
    return data


def _read_keras_zip(h5py, path: Path, where: str) -> KerasModel:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise MlplabError(f"{where} is not a valid .keras file: the zip archive is damaged or truncated ({exc})") from exc
    with zf:
        names = set(zf.namelist())
        if "config.json" not in names:
            raise MlplabError(f"{where} is a zip file without config.json; not a Keras 3 .keras model")
        if "model.weights.h5" not in names:
            other = sorted(n for n in names if n.startswith("model.weights"))
            extra = f" (found {_text(other, 80)}: sharded or npz weights are not supported)" if other else ""
            raise MlplabError(f"{where} has no model.weights.h5{extra}")
        config = _loads(_zip_member(zf, "config.json", MAX_CONFIG_BYTES, where), f"{where}: config.json")
        meta = {}
        if "metadata.json" in names:
            meta = _loads(_zip_member(zf, "metadata.json", 1 << 16, where), f"{where}: metadata.json")
            meta = meta if isinstance(meta, dict) else {}
        layers, input_shape, notes, facts = parse_model_config(config, where)
        _check_size(layers, input_shape, where)  # before the weights member is even opened
        loss = _loss_name((config.get("compile_config") or {}).get("loss")) \
            if isinstance(config.get("compile_config"), dict) else None
        with zf.open("model.weights.h5") as member, h5py.File(member, "r") as f:
            store = _KerasV3Weights(h5py, f, where)
            km = _finish(h5py, store, layers, input_shape, notes, where)
    km.loss = loss
    km.source.update(facts, keras_version=_text(meta.get("keras_version", ""), 40))
    return km


def _read_legacy_h5(h5py, path: Path, where: str) -> KerasModel:
    with h5py.File(path, "r") as f:
        if "model_config" in f.attrs and f.attrs.get_id("model_config").get_storage_size() > MAX_CONFIG_BYTES:
            raise MlplabError(f"{where}: the model_config attribute is larger than {MAX_CONFIG_BYTES // 2**20} MiB; "
                              "not a Keras MLP config")
        raw = f.attrs.get("model_config")
        if raw is None:
            raise MlplabError(f"{where} is an HDF5 file without a Keras model config (a weights-only file from "
                              "save_weights?); save the whole model with model.save()")
        if isinstance(raw, np.ndarray) and raw.shape == ():
            raw = raw[()]
        if not isinstance(raw, (bytes, str)):
            raise MlplabError(f"{where}: the model_config attribute is not text")
        config = _loads(raw, f"{where}: model_config")
        layers, input_shape, notes, facts = parse_model_config(config, where)
        _check_size(layers, input_shape, where)
        loss = None
        training = f.attrs.get("training_config")
        if isinstance(training, (bytes, str)) and len(training) <= MAX_CONFIG_BYTES:
            try:
                tc = json.loads(training)
                loss = _loss_name(tc.get("loss")) if isinstance(tc, dict) else None
            except (ValueError, RecursionError):
                pass  # informational only
        km = _finish(h5py, _LegacyH5Weights(h5py, f, where), layers, input_shape, notes, where)
        version = f.attrs.get("keras_version", b"")
        backend = f.attrs.get("backend", b"")
    km.loss = loss
    dec = lambda v: _text(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v), 40)  # noqa: E731
    km.source.update(facts, keras_version=dec(version), backend=dec(backend))
    return km


def _specs(layers: list[_Layer]) -> list[LayerSpec]:
    return [LayerSpec("dense", units=layer.units, activation=layer.activation) if layer.kind == "dense"
            else LayerSpec("dropout", rate=layer.rate) for layer in layers]


def _check_size(layers: list[_Layer], input_shape, where: str) -> None:
    """The parameter cap `mlplab train` applies (model/mlp.py), computed from the config before any array is read."""
    from mlplab.model.mlp import MAX_PARAMETERS, count_parameters

    if input_shape is None:
        return
    n_params = count_parameters(_specs(layers), math.prod(input_shape))  # exact: np.prod would wrap at 2**63
    if n_params > MAX_PARAMETERS:
        raise MlplabError(f"{where}: the model would have {n_params:,} parameters; at most {MAX_PARAMETERS:,} are "
                          "allowed")


def _finish(h5py, store, layers: list[_Layer], input_shape, notes: list[str], where: str) -> KerasModel:
    if input_shape is None:
        rows = _first_kernel_rows(h5py, store, layers)
        if rows is None:
            raise MlplabError(f"{where}: the input size is unknown (no InputLayer, no input shape, no readable kernel)")
        input_shape = (rows,)
    _check_size(layers, input_shape, where)
    input_dim = math.prod(input_shape)
    specs = _specs(layers)
    weights = _read_weights(h5py, store, layers, input_dim, where, notes)
    names = layer_names(specs)
    return KerasModel(layers=specs, input_shape=tuple(int(d) for d in input_shape), weights=weights, notes=notes,
                      keras_names={n: layer.keras_name for n, layer in zip(names, layers)})


# --- into mlplab ----------------------------------------------------------------------------------------------

def model_from(km: KerasModel):
    """An mlplab MLP (eval mode) with the Keras model's weights."""
    from mlplab.model import build

    model = build(km.spec, km.input_dim)
    model.set_weights(km.weights)
    return model.eval()


def from_keras(path):
    """Load a Keras MLP file (.keras or legacy .h5) as an mlplab MLP, ready for activations, embed and summary.

    Keras itself is not needed: the file's JSON config and weight arrays are read with zipfile and h5py. Layers
    are named mlplab-style (dense_1, dropout_1, ...); `read_keras(path).keras_names` maps them to Keras's names.
    """
    return model_from(read_keras(path))


# what an existing --out may hold for --overwrite to replace it: the run writer's entries, other verbs' outputs
_REPLACEABLE = {"config.json", "model.safetensors", "history.csv", "metrics.json", "summary.txt", "manifest.json",
                "checkpoints", "plots", "embeddings", "report.html", "activations", "dynamics"}


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MlplabError(f"--out {out} is a file; give a folder for the run")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "config.json").exists():
            raise MlplabError(f"--out {out} is a non-empty folder that is not an mlplab run; choose another --out")
        if not overwrite:
            raise MlplabError(f"run {out} already exists; replace it with --overwrite or choose another --out")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _REPLACEABLE
                         and not (p.name.startswith("metrics-") and p.name.endswith(".json"))
                         and not (p.name.startswith(".") and p.name.endswith(".tmp")))
        if foreign:
            raise MlplabError(f"run {out} holds files mlplab did not write ({', '.join(foreign[:3])}); move them "
                              "away before --overwrite replaces the folder")


def _write_folder(out: Path, files: dict[str, bytes]) -> None:
    """Write files into a temporary sibling folder, then rename it to `out` (replacing an existing run)."""
    from mlplab.atomic import atomic_write_bytes

    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=parent))
    except OSError as exc:
        raise MlplabError(f"cannot create run directory {out}: {exc.strerror or exc}") from exc
    old = None
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; a run folder gets an ordinary folder's mode
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        if out.is_dir():
            if any(out.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=parent))
                os.replace(out, old / "run")
            else:
                out.rmdir()
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and (old / "run").exists():
            os.replace(old / "run", out)  # put the previous run back
        if isinstance(exc, OSError):
            raise MlplabError(f"cannot write run directory {out}: {exc.strerror or exc}") from exc
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def import_keras(path, *, data: str, out, overwrite: bool = False) -> ImportResult:
    """`mlplab import`: a Keras MLP file + a dataset -> a complete run folder at `out`.

    The folder is what `mlplab train` writes (config.json from the same function, model.safetensors, summary.txt,
    metrics.json on the data's test split, manifest.json with `imported_from`, history.csv with no epochs), so
    every verb works on it. Everything is checked and computed before the folder appears.
    """
    import safetensors.torch

    from mlplab.runs.config import TrainOptions
    from mlplab.data import load_dataset
    from mlplab.model import summary
    from mlplab.runs.folder import RUN_FORMAT, format_history_csv
    from mlplab.runs.writer import environment
    from mlplab.runs.session import TEST_SPLIT_SEED, check_output_layer, portable_data_name, evaluate_model, \
        run_config

    out = Path(out)
    if not isinstance(data, str) or not data:
        raise MlplabError("--data is required: the dataset (name or path) the model was trained on")
    _check_out(out, overwrite)
    km = read_keras(path)
    model = model_from(km)
    opts = TrainOptions(data=portable_data_name(data), model=km.spec, val_split=0.0,
                        loss=km.loss or "categorical_crossentropy")
    opts.validate()
    ds = load_dataset(opts.data, test_fraction=opts.test_fraction, seed=TEST_SPLIT_SEED)
    features = int(np.prod(ds.input_shape))
    if features != km.input_dim:
        raise MlplabError(f"the model takes {km.input_dim} inputs (shape {km.input_shape}) but {data} has {features} "
                          f"features per sample (shape {tuple(ds.input_shape)}); import it with the data it was "
                          "trained on")
    check_output_layer(model, ds, opts.loss)
    metrics = evaluate_model(model, ds, loss=opts.loss, data_name=opts.data)
    config = run_config(opts, ds, km.input_dim)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest = {
        "format": RUN_FORMAT, "created": now, "status": "imported", "epochs": 0, "seed": opts.seed, "device": "cpu",
        "imported_from": {**km.source, "layers": km.keras_names, "keras_input_shape": list(km.input_shape)},
        "import_notes": list(km.notes),
        "environment": environment(),
        "test_accuracy": metrics["test_accuracy"], "test_loss": metrics["test_loss"],
    }
    files = {
        "config.json": (json.dumps(config, indent=2) + "\n").encode(),
        "model.safetensors": safetensors.torch.save({k: v.detach().cpu().contiguous()
                                                     for k, v in model.state_dict().items()}),
        "summary.txt": summary(model).encode(),
        "metrics.json": (json.dumps(metrics, indent=2, allow_nan=True) + "\n").encode(),
        "history.csv": format_history_csv([]).encode(),
        "manifest.json": (json.dumps(manifest, indent=2, allow_nan=True) + "\n").encode(),
    }
    _check_out(out, overwrite)  # again: the folder may have changed while the data loaded
    _write_folder(out, files)
    return ImportResult(path=out, spec=km.spec, metrics=metrics, notes=list(km.notes))
