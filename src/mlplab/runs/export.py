"""Export a run's model to ONNX, TorchScript or a Keras 3 `.keras` file.

Every format takes what the run's model takes: float32 features of shape (batch, input_dim), i.e. the samples
flattened and scaled as mlplab.data.to_features does (uint8 pixels / 255), and returns the output layer's
activations (class probabilities for a softmax output). Dropout is left out (it is the identity at inference).

- ONNX: the graph is written directly with onnx.helper (Gemm + activation nodes, opset 17), not by torch.onnx,
  whose TorchScript exporter is deprecated and whose dynamo exporter needs onnxscript; input "input", output
  "output", batch dimension "batch" dynamic.
- TorchScript: an nn.Sequential of Linear and activation modules, scripted, loadable with torch.jit.load alone.
- Keras: config.json + model.weights.h5 written with json/h5py in Keras 3's layout (no Keras needed to export);
  layer names are mlplab's, so importing the file gives back the same spec and bit-equal weights.
"""

from __future__ import annotations

import io
import json
import math
import warnings
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from mlplab.errors import MlplabError

FORMATS = ("onnx", "torchscript", "keras")
ONNX_OPSET = 17
ONNX_IR_VERSION = 8        # the IR version that goes with opset 17; newer readers accept it, older ones too
ONNX_INPUT, ONNX_OUTPUT = "input", "output"
KERAS_VERSION = "3.0.0"    # written into metadata.json: the oldest Keras that reads this layout
# protobuf messages are limited to 2 GiB; weights beyond ~1.9 GB would need ONNX's external-data files
_ONNX_MAX_BYTES = 1_900_000_000
_LEAKY_SLOPE = 0.2         # mlplab's (and Keras 3's) leaky_relu slope: mlplab.model.mlp.LEAKY_SLOPE


@dataclass
class ExportResult:
    path: Path
    format: str
    description: str   # one line for the CLI: what was written and how to feed it


def _dense_plan(model) -> list[tuple[str, np.ndarray, np.ndarray, str]]:
    """[(name, W (in, out) float32, b (out,) float32, activation)] for each dense layer, in order."""
    plan = []
    for (name, lin), spec in zip(model.dense_layers(), [s for s in model.layer_specs if s.kind == "dense"]):
        w = np.ascontiguousarray(lin.weight.detach().cpu().numpy().T, dtype=np.float32)  # (in, out)
        b = np.ascontiguousarray(lin.bias.detach().cpu().numpy(), dtype=np.float32)     # (out,)
        plan.append((name, w, b, spec.activation))
    return plan


# --- ONNX -------------------------------------------------------------------------------------------------------

def onnx_bytes(model, *, metadata: dict | None = None) -> bytes:
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise MlplabError("ONNX export needs the onnx package: pip install 'mlplab[onnx]'") from None
    import mlplab

    plan = _dense_plan(model)
    n_bytes = sum(w.nbytes + b.nbytes for _, w, b, _ in plan)
    if n_bytes > _ONNX_MAX_BYTES:
        raise MlplabError(f"the model's weights take {n_bytes:,} bytes; an ONNX file holds at most about "
                          f"{_ONNX_MAX_BYTES:,} (use --format torchscript or keras)")
    nodes, inits = [], []
    x = ONNX_INPUT
    for i, (name, w, b, act) in enumerate(plan):
        last = i == len(plan) - 1
        z = f"{name}/preactivation"
        out = ONNX_OUTPUT if last else name
        inits += [numpy_helper.from_array(w, f"{name}/kernel"), numpy_helper.from_array(b, f"{name}/bias")]
        nodes.append(helper.make_node("Gemm", [x, f"{name}/kernel", f"{name}/bias"], [z], name=f"{name}/gemm"))
        nodes += _onnx_activation(helper, numpy_helper, inits, act, z, out, name)
        x = out
    graph = helper.make_graph(
        nodes, "mlplab_mlp",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, ["batch", model.input_dim])],
        [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, ["batch", model.n_outputs])],
        initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="mlplab",
                              producer_version=mlplab.__version__, doc_string=f"mlplab MLP {model.spec}")
    proto.ir_version = ONNX_IR_VERSION
    for key, value in {"spec": model.spec, **(metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def _onnx_activation(helper, numpy_helper, inits, act: str, z: str, out: str, name: str) -> list:
    node = lambda op, ins, outs, **kw: helper.make_node(op, ins, outs, name=f"{name}/{op.lower()}", **kw)  # noqa: E731
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus", "linear": "Identity"}
    if act in simple:
        return [node(simple[act], [z], [out])]
    if act == "softmax":
        return [node("Softmax", [z], [out], axis=-1)]
    if act == "leaky_relu":
        return [node("LeakyRelu", [z], [out], alpha=_LEAKY_SLOPE)]
    if act == "gelu":
        # exact GELU, 0.5 * z * (1 + erf(z / sqrt(2))): the Gelu operator only exists from opset 20
        consts = {"sqrt2": math.sqrt(2.0), "one": 1.0, "half": 0.5}
        for key, value in consts.items():
            inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), f"{name}/{key}"))
        return [helper.make_node("Div", [z, f"{name}/sqrt2"], [f"{name}/gelu_scaled"], name=f"{name}/gelu_div"),
                helper.make_node("Erf", [f"{name}/gelu_scaled"], [f"{name}/gelu_erf"], name=f"{name}/gelu_erf"),
                helper.make_node("Add", [f"{name}/gelu_erf", f"{name}/one"], [f"{name}/gelu_1p"], name=f"{name}/gelu_add"),
                helper.make_node("Mul", [z, f"{name}/gelu_1p"], [f"{name}/gelu_prod"], name=f"{name}/gelu_mul"),
                helper.make_node("Mul", [f"{name}/gelu_prod", f"{name}/half"], [out], name=f"{name}/gelu_half")]
    raise MlplabError(f"cannot export activation {act!r} to ONNX")


# --- TorchScript --------------------------------------------------------------------------------------------------

def torchscript_bytes(model, *, metadata: dict | None = None) -> bytes:
    import torch
    from torch import nn

    modules = {"relu": nn.ReLU, "softplus": nn.Softplus, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
               "linear": nn.Identity, "gelu": nn.GELU}
    layers = []
    for name, w, b, act in _dense_plan(model):
        lin = nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))  # (out, in)
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if act == "softmax":
            layers.append(nn.Softmax(dim=-1))
        elif act == "leaky_relu":
            layers.append(nn.LeakyReLU(_LEAKY_SLOPE))
        else:
            layers.append(modules[act]())
    seq = nn.Sequential(*layers).eval()
    with warnings.catch_warnings():
        # torch 2.10+ marks TorchScript deprecated; the format is what this export is asked for, and it still loads
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated.*")
        scripted = torch.jit.script(seq)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf, _extra_files={"mlplab.json": json.dumps({"spec": model.spec,
                                                                               **(metadata or {})})})
    return buf.getvalue()


# --- Keras 3 ------------------------------------------------------------------------------------------------------

def _keras_layer(cls: str, config: dict, input_width: int | None) -> dict:
    entry = {"module": "keras.layers", "class_name": cls,
             "config": {"trainable": True, "dtype": "float32", **config}, "registered_name": None}
    if input_width is not None:
        entry["build_config"] = {"input_shape": [None, input_width]}
    return entry


def keras_bytes(model, *, name: str = "mlplab_mlp") -> bytes:
    """A Keras 3 `.keras` archive of the model (Sequential: InputLayer, then Dense/Dropout with mlplab's names)."""
    try:
        import h5py
    except ImportError:
        raise MlplabError("Keras export needs h5py: pip install 'mlplab[keras]'") from None
    layers = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
               "config": {"batch_shape": [None, model.input_dim], "dtype": "float32", "sparse": False,
                          "name": "input_layer"}}]
    width = model.input_dim
    for lname, spec in zip(model.layer_names, model.layer_specs):
        if spec.kind == "dense":
            layers.append(_keras_layer("Dense", {"name": lname, "units": spec.units, "activation": spec.activation,
                                                 "use_bias": True}, width))
            width = spec.units
        else:
            layers.append(_keras_layer("Dropout", {"name": lname, "rate": spec.rate}, None))
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": name, "trainable": True, "dtype": "float32", "layers": layers},
              "build_config": {"input_shape": [None, model.input_dim]}, "compile_config": None}
    weights = io.BytesIO()
    with h5py.File(weights, "w") as f:
        f.create_group("vars").attrs["name"] = name
        plan = {n: (w, b) for n, w, b, _ in _dense_plan(model)}
        counts = {"dense": 0, "dropout": 0}
        for lname, spec in zip(model.layer_names, model.layer_specs):
            # Keras files weights by class and position (dense, dropout, dense_1, ...), not by layer name
            key = spec.kind if counts[spec.kind] == 0 else f"{spec.kind}_{counts[spec.kind]}"
            counts[spec.kind] += 1
            group = f.create_group(f"layers/{key}/vars")
            group.attrs["name"] = lname
            if lname in plan:
                w, b = plan[lname]
                group.create_dataset("0", data=w)  # kernel (in, out)
                group.create_dataset("1", data=b)  # bias (out,)
    meta = {"keras_version": KERAS_VERSION, "date_saved": datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
            "producer": "mlplab"}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:  # stored, not deflated: Keras reads the weights member by seeking
        zf.writestr("metadata.json", json.dumps(meta))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", weights.getvalue())
    return out.getvalue()


# --- the verb -------------------------------------------------------------------------------------------------

def check_format(fmt: str, out) -> tuple[str, Path]:
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise MlplabError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise MlplabError(f"--out {out} is a folder; give a file name (e.g. model.{'pt' if fmt == 'torchscript' else fmt})")
    if fmt == "keras" and out.suffix != ".keras":
        raise MlplabError(f"--out {out}: Keras 3 loads only files whose name ends in .keras (e.g. model.keras)")
    return fmt, out


def export_model(model, fmt: str, out, *, metadata: dict | None = None) -> ExportResult:
    """Write `model` (an mlplab MLP) to `out` in format `fmt` (onnx, torchscript, keras), atomically."""
    from mlplab.atomic import atomic_write_bytes

    fmt, out = check_format(fmt, out)
    model = model.eval()
    shape = f"(batch, {model.input_dim}) float32"
    if fmt == "onnx":
        data = onnx_bytes(model, metadata=metadata)
        text = (f"ONNX opset {ONNX_OPSET}: input '{ONNX_INPUT}' {shape}, output '{ONNX_OUTPUT}' "
                f"(batch, {model.n_outputs}); batch size is dynamic")
    elif fmt == "torchscript":
        data = torchscript_bytes(model, metadata=metadata)
        text = f"TorchScript: torch.jit.load(path)(x) with x {shape} -> (batch, {model.n_outputs})"
    else:
        data = keras_bytes(model)
        text = f"Keras 3 .keras: keras.saving.load_model(path).predict(x) with x {shape} -> (batch, {model.n_outputs})"
    atomic_write_bytes(out, data)
    return ExportResult(path=out, format=fmt, description=text)


def export_run(run, fmt: str, out) -> ExportResult:
    """`mlplab export RUN --format onnx|torchscript|keras --out FILE`; `run` is a path or an opened Run."""
    from mlplab.runs.folder import open_run

    check_format(fmt, out)  # a bad format or --out fails before the run is read
    if not hasattr(run, "model"):
        run = open_run(run)
    data = run.config.get("data", {})
    metadata = {"class_names": run.class_names, "input_shape": data.get("input_shape"), "data": data.get("name")}
    return export_model(run.model(), fmt, out, metadata=metadata)
