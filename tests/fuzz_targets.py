"""Fuzz targets shared by tests/test_fuzz.py (a few hundred cases each, in CI) and benchmarks/fuzz.py (>= 5,000).

Each target takes a hypothesis `data` object and a scratch folder, feeds mlplab generated input and checks the
outcome: library calls may return or raise MlplabError, nothing else; CLI calls must exit 0 or 2 with at most a
one-line message on stderr. Any other outcome raises (an uncaught exception, or AssertionError for a bad exit).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import shutil
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from mlplab.errors import MlplabError

# argv can carry neither NUL nor (after decoding) lone surrogates from a UTF-8 locale's valid text
ARG_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
TINY_SPEC = "8:relu,10:softmax"


def _floats_text():
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**30, 10**30).map(str),
                     st.sampled_from(["nan", "inf", "-inf", "1e400", "0", "-0", "1e-400", "0x10", "1_0", " 1", ""]),
                     ARG_TEXT)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """mlplab.cli.main in this process: (exit code, stdout, stderr)."""
    from mlplab.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def check_cli(argv: list[str]) -> int:
    code, _, err = run_cli(argv)
    assert code in (0, 2), f"exit {code} for {argv!r}: {err[-2000:]}"
    if code == 2:
        assert err.startswith("mlplab: error: ") and err.count("\n") == 1, f"{argv!r}: {err[-2000:]}"
        assert "Traceback" not in err
    return code


def _library(fn, *args, **kw):
    """Call fn; MlplabError is an allowed outcome (returns None), any other exception propagates."""
    try:
        return fn(*args, **kw)
    except MlplabError as exc:
        assert "\n" not in str(exc)
        return None


@contextlib.contextmanager
def memory_limit(limit_bytes: int, what: str):
    """Assert that Python/numpy allocations while the block runs peak below limit_bytes (tracemalloc)."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= limit_bytes, f"{what}: peak allocation {peak:,} bytes > {limit_bytes:,}"


# --- model spec -------------------------------------------------------------------------------------------
SPEC_TOKEN = st.one_of(
    st.builds(lambda n, a: f"{n}:{a}", st.one_of(st.integers(-5, 2_000_000), st.text("0123456789", max_size=8)),
              st.sampled_from(["relu", "softmax", "Tanh", "linear", "bogus", "", " relu "])),
    st.builds(lambda r: f"dropout:{r}", st.one_of(st.floats(allow_nan=True).map(str),
                                                  st.sampled_from([".5", "1", "0", "2e-1", "-0.1", "1e999", "0x1"]))),
    st.text(max_size=12),
)


def target_spec(data, tmp: Path) -> None:
    from mlplab.model import parse_spec
    from mlplab.model.spec import canonical

    text = data.draw(st.one_of(st.text(max_size=60), st.lists(SPEC_TOKEN, max_size=6).map(",".join),
                               st.lists(SPEC_TOKEN, max_size=6).map(" , ".join)), label="spec")
    layers = _library(parse_spec, text)
    if layers is not None:
        assert parse_spec(canonical(layers)) == layers


# --- TOML ------------------------------------------------------------------------------------------------
def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string for printable text
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_doc(doc: dict) -> str:
    lines, tables = [], []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append(f"[{json.dumps(key)}]\n" + "".join(f"{json.dumps(k)} = {toml_value(v)}\n"
                                                             for k, v in value.items()))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                tables.append(f"[[{json.dumps(key)}]]\n" + "".join(f"{json.dumps(k)} = {toml_value(v)}\n"
                                                                   for k, v in item.items()))
        else:
            lines.append(f"{json.dumps(key)} = {toml_value(value)}\n")
    return "".join(lines) + "\n".join(tables)


TOML_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
TOML_SCALAR = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), TOML_TEXT)
TOML_ANY = st.recursive(TOML_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(TOML_TEXT, inner, max_size=3)),
                        max_leaves=6)
OPTION_KEYS = ["data", "model", "loss", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule",
               "step_size", "gamma", "batch_size", "epochs", "val_split", "early_stop", "min_delta", "restore_best",
               "init", "seed", "device", "threads", "test_fraction", "extra", "learning_rate", "batch-size"]
OPTION_VALUES = st.one_of(
    TOML_ANY, st.sampled_from(["digits", TINY_SPEC, "sgd", "adam", "step", "cosine", "val_loss:2", "loss:0", "cpu",
                               "auto", "cuda", "glorot_uniform", "mse", "x", "", "../../etc"]),
    st.integers(-3, 5), st.floats(-2, 2), st.sampled_from([0.0, 1.0, 1e20, -1.0, 0.1]))
OPTIONS = st.dictionaries(st.one_of(st.sampled_from(OPTION_KEYS), TOML_TEXT), OPTION_VALUES, max_size=6)
STAGE_KEYS = ["kind", "name", "note", "run", "runs", "epochs", "layers", "methods", "n", "split", "seed", "title"]
STAGE = st.dictionaries(st.one_of(st.sampled_from(STAGE_KEYS + OPTION_KEYS), TOML_TEXT),
                        st.one_of(OPTION_VALUES, st.sampled_from(["train", "continue", "embed", "report", "compare",
                                                                  "a", "b", "../x", ".", "a/b", "dense_1", "pca",
                                                                  "test"]),
                                  st.lists(st.sampled_from(["a", "b", "c"]), max_size=3)),
                        max_size=6)
EXPERIMENT = st.fixed_dictionaries(
    {}, optional={"name": st.one_of(TOML_TEXT, TOML_ANY), "description": TOML_ANY,
                  "data": st.one_of(st.just("digits"), TOML_ANY), "defaults": st.one_of(OPTIONS, TOML_ANY),
                  "stage": st.one_of(st.lists(STAGE, max_size=4), TOML_ANY), "extra_key": TOML_ANY})


def _toml_text(data, structured) -> str:
    return data.draw(st.one_of(
        structured.map(toml_doc),
        st.text(max_size=200),
        st.lists(st.sampled_from(['[defaults]', '[[stage]]', 'kind = "train"', 'name = "a"', 'epochs = 1',
                                  'lr = 1e999', 'data = "digits"', 'x = [1, "a"]', 'stage = 3', '"a" = {b = 1}',
                                  'model = "8:relu,10:softmax"', '[stage]', 'run = "a"', 'kind = "continue"',
                                  '= =', '[[stage]]\nkind = "embed"\nrun = "a"\nn = 5']),
                 max_size=10).map("\n".join),
    ), label="toml")


def target_experiment_toml(data, tmp: Path) -> None:
    from mlplab.runs.experiment import load_experiment

    path = tmp / "exp.toml"
    path.write_text(_toml_text(data, EXPERIMENT), encoding="utf-8", errors="surrogatepass")
    _library(load_experiment, path)


def target_train_config_toml(data, tmp: Path) -> None:
    from mlplab.runs.config import load_train_config

    path = tmp / "train.toml"
    path.write_text(_toml_text(data, OPTIONS), encoding="utf-8", errors="surrogatepass")
    opts = _library(load_train_config, path)
    if opts is not None:
        opts.validate()


# --- CLI flags ------------------------------------------------------------------------------------------
def target_cli_train_flags(data, tmp: Path) -> None:
    """Random values for train's flags. Valid combinations train tiny nets on digits for one epoch."""
    flags = {
        "--lr": _floats_text(), "--batch-size": st.one_of(st.integers(-10**20, 10**20).map(str), _floats_text()),
        "--epochs": st.one_of(st.integers(-3, 1).map(str), ARG_TEXT.filter(lambda t: not t.strip().isdigit())),
        "--val-split": _floats_text(), "--early-stop": st.one_of(ARG_TEXT, st.sampled_from(
            ["val_loss:1", "loss:0", "accuracy:-1", "val_accuracy:x", "val_loss:", ":3", "val_loss:99999999999"])),
        "--model": st.one_of(ARG_TEXT, st.lists(SPEC_TOKEN, max_size=3).map(",".join),
                             st.sampled_from(["8:relu,10:softmax", "8:relu,10:sigmoid", "3:relu", "10:softmax"])),
        "--seed": st.one_of(st.integers(-10**30, 10**30).map(str), ARG_TEXT),
        "--momentum": _floats_text(), "--optimizer": st.sampled_from(["sgd", "adam", "rmsprop", "x"]),
        "--schedule": st.sampled_from(["constant", "step", "cosine", "onecycle", "y"]),
        "--min-delta": _floats_text(), "--weight-decay": _floats_text(),
        "--threads": st.one_of(st.integers(-2, 2).map(str), ARG_TEXT),
    }
    chosen = data.draw(st.lists(st.sampled_from(sorted(flags)), min_size=1, max_size=4, unique=True), label="flags")
    argv = ["train", "--data", "digits", "--model", TINY_SPEC, "--epochs", "1", "--batch-size", "256",
            "--out", str(tmp / "run"), "--quiet"]
    for flag in chosen:
        argv += [flag, data.draw(flags[flag], label=flag)]
    if check_cli(argv) == 0:
        from mlplab.runs.folder import open_run

        assert len(open_run(tmp / "run").history()) >= 1


# --- dataset readers ------------------------------------------------------------------------------------
def _idx_bytes(data) -> bytes:
    ndim = data.draw(st.integers(0, 5), label="ndim")
    dims = data.draw(st.lists(st.one_of(st.integers(0, 30), st.integers(0, 2**32 - 1)), min_size=ndim,
                              max_size=ndim), label="dims")
    type_byte = data.draw(st.sampled_from([0x08, 0x08, 0x08, 0x09, 0x0D, 0x00]), label="type")
    header = bytes([0, 0, type_byte, ndim]) + struct.pack(f">{ndim}I", *dims)
    true_size = math.prod(dims) if dims else 0
    body_len = data.draw(st.one_of(st.just(min(true_size, 5000)), st.integers(0, 300)), label="body")
    body = data.draw(st.binary(min_size=min(body_len, 5000), max_size=min(body_len, 5000)), label="bytes")
    raw = header + body
    return raw


def target_idx(data, tmp: Path) -> None:
    from mlplab.data.idx import read_idx

    raw = data.draw(st.one_of(st.binary(max_size=200), st.builds(lambda: None).flatmap(lambda _: st.just(b""))),
                    label="raw") if data.draw(st.booleans(), label="random") else _idx_bytes(data)
    if data.draw(st.booleans(), label="truncate") and raw:
        raw = raw[: data.draw(st.integers(0, len(raw)), label="cut")]
    gz = data.draw(st.booleans(), label="gzip")
    if gz:
        raw = gzip.compress(raw, mtime=0)
        if data.draw(st.booleans(), label="cut gz"):
            raw = raw[: data.draw(st.integers(0, len(raw)), label="gzcut")]
    path = tmp / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(raw)
    with memory_limit(4 * len(raw) + (3 << 20), f"read_idx of {len(raw)} bytes"):
        arr = _library(read_idx, path)
    if arr is not None:
        assert arr.dtype == np.uint8 and arr.nbytes <= max(len(raw), 1) * 1100


def _npy_with_header(shape, dtype: str, body: bytes, fortran=False) -> bytes:
    header = "{" + f"'descr': {dtype!r}, 'fortran_order': {fortran}, 'shape': {tuple(shape)!r}, " + "}"
    header = header + " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + body


def _npz_bytes(data) -> bytes:
    mode = data.draw(st.sampled_from(["random", "valid", "forged", "forged"]), label="npz mode")
    if mode == "random":
        return data.draw(st.binary(max_size=300), label="npz raw")
    buf = io.BytesIO()
    compression = data.draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]), label="compression")
    keys = data.draw(st.sampled_from([["x_train", "y_train"], ["x", "y"], ["x_train", "y_train", "x_test", "y_test"],
                                      ["x_train", "y_train", "x_test"], ["a"], ["x", "y", "class_names"]]),
                     label="keys")
    with zipfile.ZipFile(buf, "w", compression) as z:
        for key in keys:
            if mode == "valid" or not data.draw(st.booleans(), label=f"forge {key}"):
                n = data.draw(st.integers(0, 6), label=f"n {key}")
                if key.startswith("y"):
                    arr = data.draw(st.sampled_from([np.arange(n) % 3, np.full(n, np.nan), np.arange(n) - 1,
                                                     np.array(["a"] * n), np.zeros((n, 2))]), label=f"y {key}")
                elif key == "class_names":
                    arr = np.array(["a", "b", "<c>"])
                else:
                    arr = data.draw(st.sampled_from([np.zeros((n, 2, 2), np.uint8), np.full((n, 4), np.inf),
                                                     np.ones((n, 3), np.float64) * 300, np.zeros(n),
                                                     np.zeros((n, 2), np.complex64), np.zeros((n, 2), "U1")]),
                                    label=f"x {key}")
                npy = io.BytesIO()
                np.save(npy, arr, allow_pickle=False)
                content = npy.getvalue()
            else:
                shape = data.draw(st.lists(st.one_of(st.integers(0, 10), st.integers(0, 2**40)), max_size=4),
                                  label=f"shape {key}")
                dtype = data.draw(st.sampled_from(["<f8", "|u1", "<i8", "|O", "<U10", "|V8", "<f4"]), label="dtype")
                body = data.draw(st.binary(max_size=64), label="npy body")
                content = _npy_with_header(shape, dtype, body, data.draw(st.booleans(), label="fortran"))
            z.writestr(key + ".npy", content)
    raw = buf.getvalue()
    if data.draw(st.booleans(), label="cut npz"):
        raw = raw[: data.draw(st.integers(0, len(raw)), label="npz cut")]
    return raw


def target_npz(data, tmp: Path) -> None:
    from mlplab.data.loader import load_path

    raw = _npz_bytes(data)
    path = tmp / "d.npz"
    path.write_bytes(raw)
    with memory_limit(8 * len(raw) + (4 << 20), f"npz of {len(raw)} bytes"):
        _library(load_path, path, str(path))


CSV_CELL = st.one_of(st.integers(-3, 300).map(str), st.sampled_from(["nan", "inf", "-1e999", "1e999", "", "x", '"1"',
                                                                   " 2 ", "0.5", "1e3", "label", "\ufeff1"]),
                     st.text(max_size=4))


def target_csv(data, tmp: Path) -> None:
    from mlplab.data.loader import load_path

    mode = data.draw(st.sampled_from(["rows", "rows", "text", "bytes"]), label="csv mode")
    if mode == "bytes":
        raw = data.draw(st.binary(max_size=300), label="csv bytes")
    elif mode == "text":
        raw = data.draw(st.text(max_size=300), label="csv text").encode("utf-8", "surrogatepass")
    else:
        width = data.draw(st.integers(0, 6), label="width")
        rows = data.draw(st.lists(st.lists(CSV_CELL, min_size=width, max_size=width + data.draw(
            st.integers(0, 1), label="ragged")), max_size=12), label="rows")
        raw = "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass")
    path = tmp / "d.csv"
    path.write_bytes(raw)
    _library(load_path, path, str(path))


IMAGE_LIMIT = 4 * (1 << 25) + (16 << 20)  # mlplab.data.imagefolder.MAX_IMAGE_PIXELS, decoded in a few copies


def _png_claiming(width: int, height: int) -> bytes:
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


# PNG colour type -> (channels, allowed bit depths): grey, RGB, palette, grey+alpha, RGBA (PNG spec, 11.2.2)
PNG_TYPES = {0: (1, (1, 2, 4, 8, 16)), 2: (3, (8, 16)), 3: (1, (1, 2, 4, 8)), 4: (2, (8, 16)), 6: (4, (8, 16))}


def png_bytes(samples, color_type: int, depth: int, palette=None, trns: bytes | None = None) -> bytes:
    """A PNG written by hand, so that every colour type and bit depth can be made (Pillow saves few of them).
    samples: (H, W, channels) integers in 0..2**depth - 1 (palette indices for colour type 3)."""
    import zlib

    samples = np.asarray(samples)
    h, w, _ = samples.shape
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    rows = []
    for row in samples:
        flat = row.reshape(-1).astype(np.uint32)
        if depth >= 8:
            raw = flat.astype(">u2" if depth == 16 else np.uint8).tobytes()
        else:
            per = 8 // depth
            flat = np.concatenate([flat, np.zeros((-len(flat)) % per, np.uint32)]).reshape(-1, per)
            raw = (flat << (8 - depth * (np.arange(per, dtype=np.uint32) + 1))).sum(axis=1).astype(np.uint8).tobytes()
        rows.append(b"\0" + raw)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
    if palette is not None:
        out += chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")


def any_png(data, w: int, h: int) -> tuple[bytes, np.ndarray | None]:
    """A PNG of any colour type and bit depth (with or without tRNS transparency), and the grey levels
    (0..255) mlplab must read from it when it is opaque grey (None otherwise)."""
    ctype = data.draw(st.sampled_from(sorted(PNG_TYPES)), label="png colour type")
    channels, depths = PNG_TYPES[ctype]
    depth = data.draw(st.sampled_from(depths), label="png bit depth")
    top = 2**depth - 1
    seed = data.draw(st.integers(0, 2**16), label="pixels seed")
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, top + 1, (h, w, channels))
    palette = rng.integers(0, 256, (top + 1, 3)) if ctype == 3 else None
    trns = None
    if ctype != 4 and ctype != 6 and data.draw(st.booleans(), label="tRNS"):
        trns = (bytes(rng.integers(0, 256, top + 1, dtype=np.uint8)) if ctype == 3
                else struct.pack(">" + "H" * channels, *(int(v) for v in rng.integers(0, top + 1, channels))))
    expected = samples[..., 0] / top * 255.0 if ctype == 0 and trns is None else None
    return png_bytes(samples, ctype, depth, palette, trns), expected


def _image_bytes(data, suffix: str) -> bytes:
    from PIL import Image

    mode = data.draw(st.sampled_from(["random", "valid", "mutated", "truncated", "huge", "any png"]),
                     label="image mode")
    if mode == "random":
        return data.draw(st.binary(max_size=200), label="image bytes")
    if mode == "any png":
        return any_png(data, data.draw(st.integers(1, 40), label="w"), data.draw(st.integers(1, 40), label="h"))[0]
    if mode == "huge":
        return _png_claiming(data.draw(st.integers(1, 2**31 - 1), label="w"), data.draw(st.integers(1, 2**31 - 1),
                                                                                         label="h"))
    w, h = data.draw(st.integers(1, 40), label="w"), data.draw(st.integers(1, 40), label="h")
    img_mode = data.draw(st.sampled_from(["L", "RGB", "RGBA", "1", "P", "I;16", "LA", "I", "PA", "F"]), label="mode")
    fmt = {".png": "PNG", ".jpg": "JPEG", ".gif": "GIF", ".bmp": "BMP"}[suffix]
    if fmt == "JPEG" and img_mode not in ("L", "RGB"):
        img_mode = "L"
    if fmt in ("GIF", "BMP") and img_mode in ("I;16", "LA", "RGBA", "I", "PA", "F"):
        img_mode = "L"
    if fmt == "PNG" and img_mode in ("PA", "F", "I"):  # Pillow cannot save these as PNG (any_png makes them)
        img_mode = "LA"
    buf = io.BytesIO()
    Image.new(img_mode, (w, h)).save(buf, format=fmt)
    raw = buf.getvalue()
    if mode == "truncated":
        raw = raw[: data.draw(st.integers(0, len(raw)), label="cut")]
    elif mode == "mutated":
        raw = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 4), label="n flips")):
            i = data.draw(st.integers(0, len(raw) - 1), label="pos")
            raw[i] = data.draw(st.integers(0, 255), label="byte")
        raw = bytes(raw)
    return raw


def target_image_folder(data, tmp: Path) -> None:
    from mlplab.data.loader import load_path

    root = tmp / "images"
    names = data.draw(st.lists(st.sampled_from(["0", "1", "cat", "<img src=x onerror=alert(1)>", "dog's", "é"]),
                               min_size=1, max_size=3, unique=True), label="classes")
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(data.draw(st.integers(0, 3), label="n images")):
            suffix = data.draw(st.sampled_from([".png", ".jpg", ".gif", ".bmp"]), label="suffix")
            (root / name / f"{i}{suffix}").write_bytes(_image_bytes(data, suffix))
    # a header may announce up to MAX_IMAGE_PIXELS pixels and get them decoded (a few copies), never more
    with memory_limit(IMAGE_LIMIT, "image folder"):
        _library(load_path, root, str(root))


def target_predict_image(data, tmp: Path) -> None:
    from mlplab.data.inputs import load_image

    suffix = data.draw(st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".npy", ".npy", ".jpeg", ".txt", ""]),
                       label="suffix")
    path = tmp / f"img{suffix}"
    if suffix == ".npy":
        mode = data.draw(st.sampled_from(["random", "array", "forged"]), label="npy mode")
        if mode == "random":
            raw = data.draw(st.binary(max_size=200), label="npy bytes")
        elif mode == "forged":
            raw = _npy_with_header(data.draw(st.lists(st.integers(0, 2**40), max_size=3), label="shape"),
                                   data.draw(st.sampled_from(["<f8", "|u1", "|O", "<U3", "|b1"]), label="dtype"),
                                   data.draw(st.binary(max_size=100), label="body"))
        else:
            shape = data.draw(st.sampled_from([(8, 8), (64,), (8, 8, 1), (1, 64), (), (0,), (7, 9), (64, 1)]),
                              label="shape")
            fill = data.draw(st.sampled_from([0, 1, 0.5, 255, np.nan, np.inf, -1, 2.0]), label="fill")
            dtype = data.draw(st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.bool_, np.complex64,
                                               np.float16]), label="np dtype")
            with np.errstate(all="ignore"):
                arr = np.full(shape, fill).astype(dtype)
            buf = io.BytesIO()
            np.save(buf, arr)
            raw = buf.getvalue()
    else:
        raw = _image_bytes(data, suffix if suffix in (".png", ".jpg", ".gif", ".bmp") else ".png")
    path.write_bytes(raw)
    shape = data.draw(st.sampled_from([(8, 8), (28, 28), (64,), (1, 1)]), label="input shape")
    with memory_limit(IMAGE_LIMIT, f"predict image {suffix}"):
        arr = _library(load_image, path, shape, invert=data.draw(st.booleans(), label="invert"))
    if arr is not None:
        assert arr.shape == shape and np.isfinite(arr).all()
    # every bit depth scaled by its own range: an opaque grey PNG of the model's size reads as value/max*255
    if len(shape) == 2:
        png, expected = any_png(data, shape[1], shape[0])
        (tmp / "any.png").write_bytes(png)
        got = load_image(tmp / "any.png", shape)
        if expected is not None:
            assert np.abs(got.astype(np.float64) - expected).max() <= 0.5 + 1e-9, "PNG grey levels misread"


# --- run directories ------------------------------------------------------------------------------------
_TEMPLATE: dict[str, Path] = {}


def template_run(base: Path) -> Path:
    """A real two-epoch digits run (created once per process) that the run-directory targets copy and break."""
    if "run" not in _TEMPLATE:
        from mlplab.runs.config import TrainOptions
        from mlplab.runs.session import train_run

        opts = TrainOptions.from_mapping(dict(data="digits", model="8:relu,dropout:0.1,10:softmax", epochs=2,
                                              batch_size=256, seed=0))
        path = base / "template-run"
        train_run(opts, path)
        _TEMPLATE["run"] = path
    return _TEMPLATE["run"]


RUN_FILES = ["config.json", "model.safetensors", "history.csv", "metrics.json", "manifest.json", "summary.txt",
             "checkpoints/last.safetensors", "checkpoints/best.safetensors", "checkpoints/best.json"]
JSON_ANY = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                                  st.text(max_size=10)),
                        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                        max_leaves=8)
CONFIG_PATHS = [("data", "name"), ("data", "input_shape"), ("data", "class_names"), ("data", "n_classes"),
                ("data", "val_split"), ("data", "load_options"), ("model", "spec"), ("model", "input_dim"),
                ("model", "init"), ("train", "seed"), ("train", "lr"), ("train", "epochs"), ("train", "batch_size"),
                ("train", "loss"), ("train", "early_stop"), ("train", "schedule"), ("data",), ("model",), ("train",)]
CONFIG_VALUES = st.one_of(JSON_ANY, st.sampled_from(["digits", "no-such-data", "8:relu,10:softmax", "9:relu,10:softmax",
                                                     "he_normal", "x", [8, 8], [64], [65], ["a"] * 10, -1, 0, 65,
                                                     2**63, 1e308, "12", {"test_fraction": 2}]))


def _safetensors_header_mutation(raw: bytes, data) -> bytes:
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    key = data.draw(st.sampled_from(sorted(header)), label="tensor key")
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", None]), label="field")
    if field is None:
        header[key] = data.draw(JSON_ANY, label="entry")
    elif isinstance(header[key], dict):
        header[key][field] = data.draw(st.one_of(JSON_ANY, st.sampled_from(
            ["F64", "I8", "BOOL", [2**40], [0, 2**40], [10**20, 10**20 + 4], [-1, 3], [8, 64, 1]])), label="value")
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + raw[8 + n:]


def break_run(data, run: Path, name: str) -> str:
    path = run / name
    if not path.is_file():  # gone with a symlinked checkpoints/ folder
        return f"(none: {name} is gone)"
    raw = path.read_bytes()
    hows = ["delete", "truncate", "random", "flip", "json", "symlink-dir"]
    hows += ["header"] if name.endswith(".safetensors") else ["config-field"] * 3 if name == "config.json" else []
    how = data.draw(st.sampled_from(hows), label="how")
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(raw[: data.draw(st.integers(0, len(raw)), label="cut")])
    elif how == "random":
        path.write_bytes(data.draw(st.binary(max_size=200), label="bytes"))
    elif how == "flip":
        b = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 3), label="flips")):
            b[data.draw(st.integers(0, len(b) - 1), label="pos")] = data.draw(st.integers(0, 255), label="byte")
        path.write_bytes(bytes(b))
    elif how == "json":
        path.write_text(json.dumps(data.draw(JSON_ANY, label="json")))
    elif how == "header":
        path.write_bytes(_safetensors_header_mutation(raw, data))
    elif how == "config-field":
        config = json.loads((run / "config.json").read_text())
        keys = data.draw(st.sampled_from(CONFIG_PATHS), label="config path")
        target = config
        for k in keys[:-1]:
            target = target[k]
        if data.draw(st.booleans(), label="drop"):
            target.pop(keys[-1], None)
        else:
            target[keys[-1]] = data.draw(CONFIG_VALUES, label="config value")
        (run / "config.json").write_text(json.dumps(config))
        name = "config.json:" + ".".join(keys)
    elif how == "symlink-dir" and not (run / "checkpoints").is_symlink():
        (run / "elsewhere").mkdir(exist_ok=True)
        shutil.rmtree(run / "checkpoints")
        (run / "checkpoints").symlink_to(run / "elsewhere")
    return f"{how} {name}"


def _copy_template(data, tmp: Path) -> Path:
    run = tmp / "run"
    shutil.copytree(template_run(tmp.parent), run, symlinks=True)
    for name in data.draw(st.lists(st.sampled_from(RUN_FILES), min_size=1, max_size=2, unique=True), label="files"):
        break_run(data, run, name)
    return run


def target_run_dir(data, tmp: Path) -> None:
    """open_run / model() / history() / metrics() / manifest() / split() on a broken copy of a real run."""
    from mlplab.runs.folder import open_run

    run_path = _copy_template(data, tmp)
    run = _library(open_run, run_path)
    if run is None:
        return
    for op in (lambda: run.model(), run.history, run.metrics, run.manifest, run.summary_text,
               lambda: run.class_names, lambda: run.split("test")):
        _library(op)


def target_run_dir_cli(data, tmp: Path) -> None:
    """mlplab evaluate / summary / train --resume on a broken copy of a real run (report: see its own target)."""
    run = _copy_template(data, tmp)
    command = data.draw(st.sampled_from(["evaluate", "summary", "resume", "predict"]), label="command")
    if command == "resume":
        check_cli(["train", "--resume", str(run), "--epochs", "3", "--quiet"])
    elif command == "predict":
        np.save(tmp / "x.npy", np.zeros((8, 8), np.uint8))
        check_cli(["predict", str(run), str(tmp / "x.npy")])
    else:
        check_cli([command, str(run)] + (["--quiet"] if command == "evaluate" else []))


def target_run_dir_report(data, tmp: Path) -> None:
    run = _copy_template(data, tmp)
    check_cli(["report", str(run)])


TARGETS = {
    "model spec": target_spec,
    "experiment TOML": target_experiment_toml,
    "train --config TOML": target_train_config_toml,
    "train flags (CLI)": target_cli_train_flags,
    "IDX reader": target_idx,
    "NPZ reader": target_npz,
    "CSV reader": target_csv,
    "image-folder reader": target_image_folder,
    "predict images": target_predict_image,
    "run dir (library)": target_run_dir,
    "run dir (evaluate/summary/resume/predict)": target_run_dir_cli,
    "run dir (report)": target_run_dir_report,
}


def fresh_dir(base: Path, counter=[0]) -> Path:  # noqa: B006  (a per-process counter)
    counter[0] += 1
    path = base / f"case{counter[0]}"
    path.mkdir(parents=True)
    return path


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path.parent, exist_ok=True)
