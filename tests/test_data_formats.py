"""Readers for IDX, NPZ, CSV and image folders, on files the tests write, good and corrupt."""

from __future__ import annotations

import gzip
import struct
import tracemalloc

import numpy as np
import pytest

from mlplab.data import load_dataset
from mlplab.data.idx import read_idx, write_idx
from mlplab.errors import MlplabError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real cache, Keras folder or network: every place mlplab looks points into tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("MLPLAB_DATA", raising=False)
    monkeypatch.setenv("MLPLAB_MIRRORS", "http://127.0.0.1:9/")
    monkeypatch.chdir(tmp_path)


def images(n, side=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side), dtype=np.uint8)


def labels(n, k=10):
    return (np.arange(n) % k).astype(np.uint8)


def idx_folder(root, n_train=50, n_test=20, gz=True):
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(root / f"train-images-idx3-ubyte{ext}", images(n_train))
    write_idx(root / f"train-labels-idx1-ubyte{ext}", labels(n_train))
    write_idx(root / f"t10k-images-idx3-ubyte{ext}", images(n_test, seed=1))
    write_idx(root / f"t10k-labels-idx1-ubyte{ext}", labels(n_test))
    return root


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(MlplabError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- IDX ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    a = images(7)
    path = write_idx(tmp_path / ("x.idx3" + (".gz" if gz else "")), a)
    b = read_idx(path)
    assert b.dtype == np.uint8 and b.shape == (7, 28, 28) and b.flags.writeable
    np.testing.assert_array_equal(a, b)


def test_idx_wrong_magic(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"\x01\x02\x08\x03" + struct.pack(">3I", 1, 2, 2) + bytes(4))
    msg = error_of(read_idx, path)
    assert str(path) in msg and "wrong magic number 0x01020803" in msg


def test_idx_unsupported_type(tmp_path):
    path = tmp_path / "float-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + bytes(4))
    assert "data type 0x0d is not supported" in error_of(read_idx, path)


def test_idx_truncated_raw(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", images(10))
    path.write_bytes(path.read_bytes()[:-100])
    msg = error_of(read_idx, path)
    assert str(path) in msg and "truncated" in msg and "(10, 28, 28)" in msg and "7740" in msg


def test_idx_truncated_gzip(tmp_path):
    raw = write_idx(tmp_path / "raw", images(10), compress=False).read_bytes()
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:-500]))  # a valid gzip stream whose content is short
    msg = error_of(read_idx, path)
    assert "truncated" in msg and "7340" in msg
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(raw)[:-50])  # the gzip stream itself is cut off
    assert "cut.gz" in error_of(read_idx, cut)


def test_idx_trailing_data(tmp_path):
    path = write_idx(tmp_path / "x-idx1-ubyte", labels(5))
    path.write_bytes(path.read_bytes() + b"\x00")
    assert "too long" in error_of(read_idx, path)
    gz = tmp_path / "x-idx1-ubyte.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert "data after the 5 bytes" in error_of(read_idx, gz)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_header_claiming_a_billion_images_fails_without_allocating(tmp_path, gz):
    header = b"\x00\x00\x08\x03" + struct.pack(">3I", 10**9, 28, 28)
    payload = header + bytes(28 * 28 * 3)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(payload) if gz else payload)
    tracemalloc.start()
    try:
        msg = error_of(read_idx, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "1000000000" in msg and str(path) in msg
    assert peak < 4 * 1024 * 1024  # the 784 GB the header claims were never asked for


def test_idx_folder_count_mismatch(tmp_path):
    root = idx_folder(tmp_path / "d")
    write_idx(root / "train-labels-idx1-ubyte.gz", labels(49))
    msg = error_of(load_dataset, str(root))
    assert "train-labels-idx1-ubyte.gz" in msg and "49 labels" in msg and "50 images" in msg


def test_idx_folder_loads_and_prefers_raw(tmp_path):
    root = idx_folder(tmp_path / "d", gz=True)
    write_idx(root / "train-images-idx3-ubyte", images(50, seed=5))  # torchvision keeps raw next to .gz
    write_idx(root / "train-labels-idx1-ubyte", labels(50))
    ds = load_dataset(str(root))
    np.testing.assert_array_equal(ds.x_train, images(50, seed=5))
    assert ds.y_train.dtype == np.int64 and len(ds.y_test) == 20
    assert ds.class_names == [str(i) for i in range(10)] and ds.source == f"IDX folder {root}"


def test_idx_folder_labels_out_of_range_against_named_classes(tmp_path, monkeypatch):
    root = idx_folder(tmp_path / "data" / "fashion-mnist")
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.full(20, 12, dtype=np.uint8))
    monkeypatch.setenv("MLPLAB_DATA", str(tmp_path / "data"))
    msg = error_of(load_dataset, "fashion-mnist", download=False)
    assert "test part" in msg and "label 12 is out of range" in msg and "[0, 10)" in msg


def test_idx_folder_missing_test_labels(tmp_path):
    root = idx_folder(tmp_path / "d")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    assert "has test images but no test labels" in error_of(load_dataset, str(root))


# --- NPZ ------------------------------------------------------------------------------------------------

def test_npz_train_test_keys(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=images(30), y_train=labels(30), x_test=images(10), y_test=labels(10))
    ds = load_dataset(str(path))
    assert ds.x_train.shape == (30, 28, 28) and ds.x_test.shape == (10, 28, 28)
    assert ds.y_train.dtype == np.int64 and ds.n_classes == 10 and ds.input_dim == 784
    assert ds.name == str(path) and "test split" not in ds.source


def test_npz_x_y_gets_stratified_test_split(tmp_path):
    path = tmp_path / "xy.npz"
    np.savez(path, x=images(100), y=labels(100, k=4), class_names=np.array(["a", "b", "c", "d"]))
    ds = load_dataset(str(path), test_fraction=0.25, seed=3)
    assert len(ds.y_train) == 75 and len(ds.y_test) == 25
    assert ds.class_names == ["a", "b", "c", "d"]
    assert sorted(np.bincount(ds.y_test).tolist()) == [6, 6, 6, 7]
    assert "test split: 25% held out, stratified, seed 3" in ds.source


def test_npz_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([object(), 1], dtype=object), y=np.array([0, 1]))
    msg = error_of(load_dataset, str(path))
    assert str(path) in msg and "cannot read safely" in msg


def test_npz_missing_keys_lists_found(tmp_path):
    path = tmp_path / "k.npz"
    np.savez(path, images=images(3))
    msg = error_of(load_dataset, str(path))
    assert "expected arrays x_train, y_train" in msg and "found images" in msg


def test_npz_nan_pixels(tmp_path):
    path = tmp_path / "nan.npz"
    x = np.random.default_rng(0).random((20, 4, 4))
    x[3, 1, 1] = np.nan
    x[5, 0, 0] = np.inf
    np.savez(path, x=x, y=labels(20, 2))
    msg = error_of(load_dataset, str(path))
    assert str(path) in msg and "2 value(s) are NaN or infinite" in msg


def test_npz_label_problems(tmp_path):
    path = tmp_path / "neg.npz"
    np.savez(path, x=images(20), y=np.r_[labels(19, 2).astype(np.int64), -1])
    assert "label -1 is out of range" in error_of(load_dataset, str(path))
    np.savez(path, x=images(20), y=np.full(20, 0.5))
    assert "whole numbers, found 0.5" in error_of(load_dataset, str(path))
    np.savez(path, x=images(20), y=labels(19, 2))
    assert "20 samples but 19 labels" in error_of(load_dataset, str(path))
    np.savez(path, x=images(20), y=np.r_[labels(19, 2).astype(np.int64), 50_000])
    assert "label 50000 is out of range" in error_of(load_dataset, str(path))


def test_npz_not_a_zip(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file at all")
    assert "junk.npz" in error_of(load_dataset, str(path))


def test_npz_train_test_shape_mismatch(tmp_path):
    path = tmp_path / "shapes.npz"
    np.savez(path, x_train=images(10), y_train=labels(10), x_test=images(10, side=14), y_test=labels(10))
    assert "(28, 28) but test samples (14, 14)" in error_of(load_dataset, str(path))


# --- CSV ------------------------------------------------------------------------------------------------

def write_csv(path, y, x, header=None):
    rows = [",".join(str(v) for v in [int(label), *row]) for label, row in zip(y, x.reshape(len(x), -1))]
    path.write_text("\n".join(([header] if header else []) + rows) + "\n")
    return path


def test_csv_784_columns_with_header_become_28x28(tmp_path):
    x, y = images(40), labels(40)
    header = "label," + ",".join(f"pixel{i}" for i in range(784))
    ds = load_dataset(str(write_csv(tmp_path / "m.csv", y, x, header)), test_fraction=0.25)
    assert ds.x_train.shape == (30, 28, 28) and ds.x_train.dtype == np.uint8
    both = np.concatenate([ds.x_train, ds.x_test]).reshape(40, -1)
    assert sorted(map(bytes, both)) == sorted(map(bytes, x.reshape(40, -1)))


def test_csv_square_and_tabular_shapes(tmp_path):
    ds = load_dataset(str(write_csv(tmp_path / "sq.csv", labels(20, 2), images(20, side=4))))
    assert ds.input_shape == (4, 4)
    tab = tmp_path / "tab.csv"
    tab.write_text("".join(f"{i % 3},0.5,{i / 10},2.25,-1.5,7\n" for i in range(30)))
    ds = load_dataset(str(tab))
    assert ds.input_shape == (5,) and ds.x_train.dtype == np.float32 and ds.n_classes == 3
    assert ds.x_train[:, 0].tolist() == [0.5] * 24


def test_csv_nan_and_bad_rows(tmp_path):
    path = tmp_path / "nan.csv"
    path.write_text("0,1,2,3,4\n1,5,nan,7,8\n")
    assert "nan.csv: 1 value(s) are NaN or infinite" in error_of(load_dataset, str(path))
    path.write_text("0,1,2,3,4\n1,5,6\n")
    msg = error_of(load_dataset, str(path))
    assert "nan.csv: bad CSV" in msg
    path.write_text("label,a\n")
    assert "no data rows" in error_of(load_dataset, str(path))


def test_csv_labels_must_be_whole(tmp_path):
    path = tmp_path / "frac.csv"
    path.write_text("".join(f"{i % 2 + 0.5},1,2,3,4\n" for i in range(10)))
    assert "frac.csv: labels must be whole numbers" in error_of(load_dataset, str(path))


def test_csv_train_test_pair_in_folder(tmp_path):
    root = tmp_path / "kaggle"
    root.mkdir()
    write_csv(root / "mnist_train.csv", labels(30), images(30))
    write_csv(root / "mnist_test.csv", labels(10), images(10, seed=2))
    ds = load_dataset(str(root))
    assert (len(ds.y_train), len(ds.y_test)) == (30, 10)
    np.testing.assert_array_equal(ds.x_test, images(10, seed=2))


# --- image folders --------------------------------------------------------------------------------------

def save_png(path, array, mode="L"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    (img.convert("RGB") if mode == "RGB" else img).save(path)


def test_image_folder_sorted_classes_grayscale(tmp_path):
    root = tmp_path / "imgs"
    for c, cls in enumerate(["zebra", "ant", "mole"]):
        for i in range(5):
            save_png(root / cls / f"{i}.png", np.full((12, 10), 40 * c + i, dtype=np.uint8),
                     mode="RGB" if i == 0 else "L")
    (root / "ant" / "notes.txt").write_text("ignored")
    ds = load_dataset(str(root), test_fraction=0.2)
    assert ds.class_names == ["ant", "mole", "zebra"]
    assert ds.input_shape == (12, 10) and ds.x_train.dtype == np.uint8
    assert np.bincount(ds.y_test).tolist() == [1, 1, 1]
    ant = np.concatenate([ds.x_train[ds.y_train == 0], ds.x_test[ds.y_test == 0]])
    assert sorted(int(a[0, 0]) for a in ant) == [40, 41, 42, 43, 44]  # "ant" was written with c = 1


def test_image_folder_sizes_must_match(tmp_path):
    root = tmp_path / "imgs"
    save_png(root / "a" / "1.png", np.zeros((8, 8), np.uint8))
    save_png(root / "b" / "2.png", np.zeros((8, 9), np.uint8))
    msg = error_of(load_dataset, str(root))
    assert "2.png: image is 9x8 pixels" in msg and "all images must have one size" in msg


def test_image_folder_train_test_layout(tmp_path):
    root = tmp_path / "split"
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                save_png(root / split / cls / f"{i}.png", np.zeros((6, 6), np.uint8))
    ds = load_dataset(str(root))
    assert (len(ds.y_train), len(ds.y_test)) == (8, 4) and ds.class_names == ["cat", "dog"]
    save_png(root / "test" / "eel" / "0.png", np.zeros((6, 6), np.uint8))
    assert "eel are not among the training classes" in error_of(load_dataset, str(root))


def test_unreadable_image(tmp_path):
    root = tmp_path / "imgs"
    save_png(root / "a" / "1.png", np.zeros((8, 8), np.uint8))
    (root / "b").mkdir()
    (root / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    assert "broken.png: cannot read image" in error_of(load_dataset, str(root))


def test_image_folder_with_a_nested_folder_or_an_empty_class_is_refused_by_name(tmp_path):
    root = tmp_path / "imgs"
    save_png(root / "a" / "1.png", np.zeros((8, 8), np.uint8))
    save_png(root / "b" / "more" / "2.png", np.zeros((8, 8), np.uint8))  # b holds only a subfolder
    msg = error_of(load_dataset, str(root))
    assert f"{root / 'b' / 'more'} is a folder inside class folder 'b'" in msg and "\n" not in msg
    save_png(root / "b" / "3.png", np.zeros((8, 8), np.uint8))  # images beside the subfolder: still refused
    assert "is a folder inside class folder 'b'" in error_of(load_dataset, str(root))
    (root / "b" / "more" / "2.png").unlink()
    (root / "b" / "more").rmdir()
    (root / "c").mkdir()
    (root / "c" / "readme.txt").write_text("no pictures here")
    assert "class folder 'c' has no images" in error_of(load_dataset, str(root))
    (root / "c" / "readme.txt").unlink()
    (root / "c").rmdir()
    (root / "a" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes nor nested data
    ds = load_dataset(str(root), test_fraction=0.5)
    assert ds.class_names == ["a", "b"]


def test_empty_and_broken_pictures_name_the_file_not_a_stream(tmp_path):
    from mlplab.data.inputs import load_image

    root = tmp_path / "imgs"
    save_png(root / "a" / "1.png", np.zeros((8, 8), np.uint8))
    (root / "b").mkdir()
    (root / "b" / "empty.png").write_bytes(b"")
    assert error_of(load_dataset, str(root)) == f"{root / 'b' / 'empty.png'} is empty (0 bytes), not an image"
    (tmp_path / "junk.png").write_bytes(b"hello, not a picture")
    for path in (tmp_path / "junk.png", root / "b" / "empty.png"):
        with pytest.raises(MlplabError) as err:
            load_image(path, (8, 8))
        assert str(path) in str(err.value) and "BytesIO" not in str(err.value) and "0x" not in str(err.value)


def test_predict_pictures_are_resized_with_a_note_and_strips_refused(tmp_path):
    from mlplab.data.inputs import load_image

    save_png(tmp_path / "big.png", np.zeros((56, 56), np.uint8))
    save_png(tmp_path / "wide.png", np.zeros((28, 56), np.uint8))
    save_png(tmp_path / "strip.png", np.zeros((300, 10), np.uint8))
    save_png(tmp_path / "exact.png", np.zeros((28, 28), np.uint8))
    notes = []
    assert load_image(tmp_path / "exact.png", (28, 28), notes=notes).shape == (28, 28) and notes == []
    assert load_image(tmp_path / "big.png", (28, 28), notes=notes).shape == (28, 28)
    assert notes == [f"{tmp_path / 'big.png'} is 56x56 pixels; resized to the model's 28x28"]
    load_image(tmp_path / "wide.png", (28, 28), notes=notes)
    assert notes[-1].endswith("resized to the model's 28x28, aspect ratio 2.00 -> 1.00")
    with pytest.raises(MlplabError, match=r"strip.png is 10x300 pixels; .* distort it 30-fold; crop it"):
        load_image(tmp_path / "strip.png", (28, 28))


def test_unknown_file_type_and_empty_folder(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    assert "unsupported file type .parquet" in error_of(load_dataset, str(tmp_path / "x.parquet"))
    (tmp_path / "empty").mkdir()
    assert "found no dataset in this folder" in error_of(load_dataset, str(tmp_path / "empty"))


from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_idx_reader_never_fails_with_anything_but_mlplab_error(tmp_path_factory, blob, gz):
    """Random bytes after a plausible header: either a correct array or one MlplabError, nothing else."""
    path = tmp_path_factory.mktemp("fuzz") / "f-idx-ubyte"
    data = b"\x00\x00\x08" + blob
    path.write_bytes(gzip.compress(data) if gz else data)
    try:
        a = read_idx(path)
    except MlplabError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        assert a.size == len(data) - 4 - 4 * a.ndim


# --- every PNG colour type and bit depth, and transparency (issue 19, items 2 and 3) ------------------------
def _png_cases():
    from fuzz_targets import PNG_TYPES

    return [(c, d) for c, (_, depths) in PNG_TYPES.items() for d in depths]


@pytest.mark.parametrize("ctype, depth", _png_cases())
def test_every_png_colour_type_and_bit_depth_reads_its_grey_levels(tmp_path, ctype, depth):
    """16-bit grey used to be binarised (every value above 255 became white); each depth is now scaled by its
    own range, colour by ITU-R 601-2 weights, in both readers (image folders and predict)."""
    from fuzz_targets import PNG_TYPES, png_bytes

    from mlplab.data.imagefolder import read_image_folder
    from mlplab.data.inputs import load_image

    channels, _ = PNG_TYPES[ctype]
    top = 2**depth - 1
    rng = np.random.default_rng(depth * 10 + ctype)
    samples = rng.integers(0, top + 1, (6, 5, channels))
    if channels in (2, 4):
        samples[..., -1] = top  # opaque: transparency has its own tests
    palette = rng.integers(0, 256, (top + 1, 3)) if ctype == 3 else None
    if ctype == 3:
        rgb = palette[samples[..., 0]] / 255.0
    elif channels >= 3:
        rgb = samples[..., :3] / top
    else:
        rgb = np.repeat(samples[..., :1] / top, 3, axis=2)
    expected = (rgb @ np.array([0.299, 0.587, 0.114])) * 255.0
    (tmp_path / "c" / "a").mkdir(parents=True)
    (tmp_path / "c" / "a" / "x.png").write_bytes(png_bytes(samples, ctype, depth, palette))
    (tmp_path / "p.png").write_bytes(png_bytes(samples, ctype, depth, palette))
    got = load_image(tmp_path / "p.png", (6, 5)).astype(np.float64)
    folder = read_image_folder(tmp_path / "c")[0][0].astype(np.float64)
    tolerance = 1.5 if depth == 16 and channels > 1 else 0.5  # Pillow keeps the high byte of 16-bit colour
    assert np.abs(got - expected).max() <= tolerance
    np.testing.assert_array_equal(folder, got)
    if depth == 16 and ctype == 0:
        assert len(np.unique(got)) > 20  # not {0, 255}


def _alpha_only(shape=(8, 8), ink=0):
    """A cross drawn only in the alpha channel: colour `ink` everywhere, opaque on the cross, as a drawing
    program saves a stroke on a transparent canvas."""
    a = np.zeros(shape, np.int64)
    a[3:5, :] = 255
    a[:, 3:5] = 255
    rgba = np.stack([np.full(shape, ink), np.full(shape, ink), np.full(shape, ink), a], axis=2)
    return rgba, a


def test_a_shape_drawn_only_in_alpha_is_not_read_as_a_blank_image(tmp_path):
    from fuzz_targets import png_bytes

    from mlplab.data.inputs import load_image

    for ink in (0, 255):
        rgba, a = _alpha_only(ink=ink)
        (tmp_path / "s.png").write_bytes(png_bytes(rgba, 6, 8))
        dark = load_image(tmp_path / "s.png", (8, 8), background=0)  # MNIST-like: light ink on dark
        np.testing.assert_array_equal(dark, a.astype(np.uint8))
        light = load_image(tmp_path / "s.png", (8, 8), background=lambda: 255.0)  # dark ink on light data
        np.testing.assert_array_equal(light, (255 - a).astype(np.uint8))


def test_half_transparent_pixels_are_composited_on_the_data_background(tmp_path):
    from fuzz_targets import png_bytes

    from mlplab.data.imagefolder import border_background
    from mlplab.data.inputs import load_image

    la = np.zeros((4, 4, 2), np.int64)
    la[..., 0] = 200
    la[..., 1] = np.arange(16).reshape(4, 4) * 17  # alpha 0..255
    (tmp_path / "la.png").write_bytes(png_bytes(la, 4, 8))
    got = load_image(tmp_path / "la.png", (4, 4), background=30.0)
    alpha = la[..., 1] / 255.0
    np.testing.assert_array_equal(got, np.rint(alpha * 200 + (1 - alpha) * 30).astype(np.uint8))
    images = np.zeros((3, 5, 5), np.uint8)
    images[:, 2, 2] = 255
    assert border_background(images) == 0.0 and border_background(255 - images) == 255.0


def test_an_image_folder_composites_transparent_pictures_on_its_own_background(tmp_path):
    from fuzz_targets import png_bytes

    from mlplab.data.imagefolder import read_image_folder

    opaque = np.full((8, 8, 1), 255)  # a light background (dark-on-light data)
    opaque[2:6, 2:6] = 0
    rgba, a = _alpha_only(ink=0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "1.png").write_bytes(png_bytes(opaque, 0, 8))
    (tmp_path / "b" / "1.png").write_bytes(png_bytes(rgba, 6, 8))
    x, y, _ = read_image_folder(tmp_path)
    assert x.dtype == np.uint8 and list(y) == [0, 1]
    np.testing.assert_array_equal(x[1], (255 - a).astype(np.uint8))  # black ink on the folder's white background


def test_integer_pictures_beyond_16_bits_are_one_line(tmp_path):
    from PIL import Image

    from mlplab.data.inputs import load_image

    Image.fromarray(np.full((4, 4), 70000, np.int32), mode="I").save(tmp_path / "big.tif")
    (tmp_path / "big.png").write_bytes((tmp_path / "big.tif").read_bytes())
    with pytest.raises(MlplabError, match="up to 16 bits"):
        load_image(tmp_path / "big.png", (4, 4))
