"""Named datasets: lookup order, digest checks, downloads from a loopback HTTP server, the Debian package."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from mlplab.data import load_dataset, sources
from mlplab.data.download import DownloadError, fetch
from mlplab.data.idx import write_idx
from mlplab.errors import MlplabError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(not all((DEBIAN / f).is_file() for f in sources.IDX_FILES),
                                  reason="Debian package dataset-fashion-mnist is not installed "
                                         "(apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Cache, Keras folder and cwd inside tmp_path; any accidental download goes to a closed local port."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("MLPLAB_DATA", raising=False)
    monkeypatch.setenv("MLPLAB_MIRRORS", f"http://127.0.0.1:{closed_port()}/")
    monkeypatch.chdir(tmp_path)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over tmp_path/www; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def cache(tmp_path) -> Path:
    return tmp_path / "xdg" / "mlplab"


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def fake_mnist_npz(path, n=30, m=10):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), y_train=np.arange(n) % 10,
             x_test=rng.integers(0, 256, (m, 28, 28), dtype=np.uint8), y_test=np.arange(m) % 10)
    return path


def fake_idx_folder(folder, n=30, m=10):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (m, 28, 28), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(m) % 10)
    return folder


# --- lookup ---------------------------------------------------------------------------------------------

def test_unknown_name_lists_valid_ones_and_paths():
    with pytest.raises(MlplabError) as info:
        load_dataset("cifar10")
    msg = str(info.value)
    assert "'cifar10'" in msg and "mnist, fashion-mnist, kmnist, digits" in msg and ".npz" in msg


def test_names_are_case_insensitive_with_aliases():
    assert sources.canonical("Fashion_MNIST") == "fashion-mnist" and sources.canonical("KMNIST") == "kmnist"
    assert sources.canonical("mnist2") is None


def test_class_names():
    assert sources.NAMED["fashion-mnist"].class_names == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert sources.NAMED["kmnist"].class_names[:4] == ("o", "ki", "su", "tsu")
    assert sources.NAMED["mnist"].class_names == tuple("0123456789")


def test_mlplab_data_comes_first_then_cache_then_keras(tmp_path, monkeypatch):
    keras = tmp_path / "keras" / "datasets"
    keras.mkdir(parents=True)
    fake_mnist_npz(keras / "mnist.npz")
    place, _ = sources.locate("mnist")
    assert place.kind == "Keras cache"
    fake_idx_folder(cache(tmp_path) / "mnist")
    assert sources.locate("mnist")[0].kind == "cache"
    fake_idx_folder(tmp_path / "tv" / "MNIST" / "raw")
    own = tmp_path / "own"
    own.mkdir()
    fake_mnist_npz(own / "mnist.npz", n=20)
    monkeypatch.setenv("MLPLAB_DATA", str(own))
    ds = load_dataset("mnist", download=False)
    assert len(ds.y_train) == 20 and ds.source == f"$MLPLAB_DATA {own / 'mnist.npz'}"
    assert ds.class_names == list("0123456789")
    # with the cache and Keras copies gone, an explicit data_dir (beating $MLPLAB_DATA) leads to torchvision's layout
    shutil.rmtree(cache(tmp_path))
    (keras / "mnist.npz").unlink()
    ds = load_dataset("mnist", data_dir=tmp_path / "tv", download=False)
    assert len(ds.y_train) == 30 and ds.source == f"torchvision folder {tmp_path / 'tv' / 'MNIST' / 'raw'}"


def test_torchvision_folder_under_cwd_data(tmp_path):
    fake_idx_folder(tmp_path / "data" / "KMNIST" / "raw")
    ds = load_dataset("kmnist", download=False)
    assert ds.source == "torchvision folder data/KMNIST/raw" and ds.class_names[-1] == "wo"


def test_keras_cache_file_with_wrong_digest_is_refused(tmp_path):
    keras = tmp_path / "keras" / "datasets"
    keras.mkdir(parents=True)
    fake_mnist_npz(keras / "mnist.npz")
    with pytest.raises(MlplabError) as info:
        load_dataset("mnist", download=False)
    msg = str(info.value)
    assert str(keras / "mnist.npz") in msg and "is not the published mnist file" in msg
    assert sources.MNIST_NPZ_SHA256 in msg


def test_not_here_and_download_off_lists_places(tmp_path):
    with pytest.raises(MlplabError) as info:
        load_dataset("kmnist", download=False)
    msg = str(info.value)
    assert "kmnist is not on this machine" in msg and "downloading is off" in msg
    assert str(cache(tmp_path) / "kmnist") in msg and "data/KMNIST/raw" in msg


def test_named_dataset_must_be_28x28(tmp_path, monkeypatch):
    own = tmp_path / "own"
    own.mkdir()
    rng = np.random.default_rng(0)
    np.savez(own / "mnist.npz", x_train=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8), y_train=np.arange(10),
             x_test=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8), y_test=np.arange(10))
    monkeypatch.setenv("MLPLAB_DATA", str(own))
    with pytest.raises(MlplabError, match="mnist images must be 28x28"):
        load_dataset("mnist", download=False)


# --- downloads ------------------------------------------------------------------------------------------

def test_fetch_good_file_lands_in_cache_with_progress(tmp_path, server):
    www, url = server
    payload = np.random.default_rng(0).bytes(300_000)
    (www / "blob.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    seen = []
    dest = cache(tmp_path) / "x"
    path = fetch("blob.bin", [digest], [url], dest, progress=lambda f, done, total: seen.append((f, done, total)))
    assert path == dest / "blob.bin" and path.read_bytes() == payload
    assert files_under(cache(tmp_path)) == [path]  # no temporary file left next to it
    assert seen[0] == ("blob.bin", 0, 300_000) and seen[-1] == ("blob.bin", 300_000, 300_000)
    assert all(a[1] <= b[1] for a, b in zip(seen, seen[1:]))


def test_fetch_tries_next_mirror_after_404_and_bad_digest(tmp_path, server):
    www, url = server
    (www / "good").mkdir()
    (www / "bad").mkdir()
    (www / "good" / "f.gz").write_bytes(b"right bytes")
    (www / "bad" / "f.gz").write_bytes(b"wrong bytes")
    digest = hashlib.sha256(b"right bytes").hexdigest()
    path = fetch("f.gz", [digest], [url + "missing/", url + "bad/", url + "good/"], tmp_path / "c")
    assert path.read_bytes() == b"right bytes"


def test_wrong_checksum_leaves_nothing_in_cache(tmp_path, server):
    www, url = server
    fake_idx_folder(www)  # files with the right names but not the published bytes
    with pytest.raises(MlplabError) as info:
        load_dataset("kmnist", mirrors=[url])
    msg = str(info.value)
    assert "SHA-256" in msg and "train-images-idx3-ubyte.gz" in msg and url in msg
    assert files_under(tmp_path / "xdg") == []
    with pytest.raises(DownloadError) as info:
        fetch("t10k-labels-idx1-ubyte.gz", ["0" * 64], [url], cache(tmp_path) / "direct")
    assert info.value.attempts[0][0] == url + "t10k-labels-idx1-ubyte.gz"
    assert not (cache(tmp_path) / "direct").exists()


def test_server_down_gives_one_line_with_places_and_mirrors(tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}/mirror/"
    with pytest.raises(MlplabError) as info:
        load_dataset("mnist", mirrors=[dead])
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("mnist is not on this machine (looked in ")
    for place in (cache(tmp_path) / "mnist.npz", cache(tmp_path) / "mnist", tmp_path / "keras" / "datasets" / "mnist.npz",
                  "data/MNIST/raw"):
        assert str(place) in msg
    assert dead + "mnist.npz" in msg and dead + "train-images-idx3-ubyte.gz" in msg
    assert files_under(tmp_path / "xdg") == []


def test_env_var_overrides_mirrors(tmp_path, server, monkeypatch):
    www, url = server
    monkeypatch.setenv("MLPLAB_MIRRORS", url)
    with pytest.raises(MlplabError) as info:
        load_dataset("kmnist")
    assert url + "train-images-idx3-ubyte.gz (HTTP 404)" in str(info.value)


@needs_debian
def test_download_of_published_files_into_cache_then_reuse(tmp_path, server, monkeypatch):
    """The Debian files are published Fashion-MNIST bytes: served over loopback they must verify and load."""
    www, url = server
    for f in sources.IDX_FILES:
        shutil.copy(DEBIAN / f, www / f)
    monkeypatch.setitem(sources.NAMED, "fashion-mnist",
                        sources.Named(**{**sources.NAMED["fashion-mnist"].__dict__, "system_dirs": ()}))
    ds = load_dataset("fashion-mnist", mirrors=[url])
    folder = cache(tmp_path) / "fashion-mnist"
    assert ds.source == f"cache {folder}" and len(ds.y_train) == 60_000
    assert files_under(tmp_path / "xdg") == [folder / f for f in sorted(sources.IDX_FILES)]
    for f in sources.IDX_FILES:
        assert (folder / f).read_bytes() == (DEBIAN / f).read_bytes()
    for f in sources.IDX_FILES:
        (www / f).unlink()  # from now on the server has nothing: the cache must be used
    assert load_dataset("fashion-mnist").source == f"cache {folder}"


# --- the Debian package ---------------------------------------------------------------------------------

@needs_debian
def test_fashion_mnist_from_debian_package():
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.source == f"system package {DEBIAN}"
    assert ds.x_train.shape == (60_000, 28, 28) and ds.x_test.shape == (10_000, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == [6_000] * 10
    assert np.bincount(ds.y_test).tolist() == [1_000] * 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert (int(ds.x_train.min()), int(ds.x_train.max())) == (0, 255)


@needs_debian
def test_debian_digests_are_the_known_ones():
    for f in sources.IDX_FILES:
        digest = hashlib.sha256((DEBIAN / f).read_bytes()).hexdigest()
        assert digest in sources.FASHION_IDX_SHA256[f]
        with gzip.open(DEBIAN / f) as g:
            assert g.read(3) == b"\x00\x00\x08"
