"""`mlplab datasets`, `datasets show`, `datasets fetch`, run through mlplab.cli.main like the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlplab.cli import main

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("MLPLAB_DATA", raising=False)
    monkeypatch.setenv("MLPLAB_MIRRORS", "http://127.0.0.1:9/")
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line, whatever the terminal
    monkeypatch.chdir(tmp_path)


def run(capsys, *argv) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code, out, err


def row(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.strip("│┃ ").startswith(name + " "))


def test_datasets_lists_every_named_dataset_with_where_it_loads_from(capsys, tmp_path):
    code, out, err = run(capsys, "datasets")
    assert code == 0 and err == ""
    for name in ("mnist", "fashion-mnist", "kmnist", "digits"):
        assert name in out
    assert "download needed" in row(out, "mnist") and "60,000" in row(out, "mnist")
    assert "10,000" in row(out, "kmnist") and "download needed" in row(out, "kmnist")
    assert "bundled" in row(out, "digits") and "1,437" in row(out, "digits")
    if DEBIAN.is_dir():
        assert "system package" in row(out, "fashion-mnist")
    assert "T-shirt/top, Trouser, Pullover" in out and "o, ki, su, tsu" in out
    assert f"Downloads go to {tmp_path / 'xdg' / 'mlplab'}" in out


def test_datasets_list_sees_the_cache(capsys, tmp_path):
    folder = tmp_path / "xdg" / "mlplab" / "kmnist"
    folder.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / f).write_bytes(b"")  # presence is what the listing reports; reading verifies later
    code, out, _ = run(capsys, "datasets")
    assert code == 0 and "cache" in row(out, "kmnist") and "download needed" not in row(out, "kmnist")


def test_show_digits(capsys):
    code, out, err = run(capsys, "datasets", "show", "digits")
    assert code == 0 and err == ""
    assert "digits: 10 classes, inputs 8x8 (64 features)" in out
    assert "test split: 20% held out, stratified, seed 0" in out
    assert "(1437, 8, 8)" in row(out, "train") and "0 .. 255" in row(out, "train")
    assert "(360, 8, 8)" in row(out, "test") and "uint8" in row(out, "test")
    class_rows = [line for line in out.splitlines() if line.strip("│ ").split(" ")[0].isdigit()]
    assert len(class_rows) == 10
    assert sum(int(r.split("│")[3].replace(",", "")) for r in class_rows) == 1437


def test_show_a_path(capsys, tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.full((40, 3), 0.5, np.float32), y=np.arange(40) % 2)
    code, out, _ = run(capsys, "datasets", "show", str(path), "--test-fraction", "0.25", "--seed", "3")
    assert code == 0 and "2 classes, inputs 3 (3 features)" in out
    assert "(30, 3)" in out and "float32" in out and "0.5 .. 0.5" in out and "seed 3" in out


def test_show_unknown_name_is_one_error_line_exit_2(capsys):
    code, out, err = run(capsys, "datasets", "show", "cifar10")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("mlplab: error: unknown dataset 'cifar10'")
    assert "mnist, fashion-mnist, kmnist, digits" in err


def test_fetch_bundled_and_unknown(capsys):
    code, out, _ = run(capsys, "datasets", "fetch", "digits")
    assert code == 0 and "ships with scikit-learn" in out
    code, _, err = run(capsys, "datasets", "fetch", "cifar10")
    assert code == 2 and err == "mlplab: error: unknown dataset 'cifar10'; choose one of: mnist, fashion-mnist, kmnist, digits\n"


def test_fetch_with_dead_mirror_fails_cleanly(capsys, tmp_path):
    code, _, err = run(capsys, "datasets", "fetch", "kmnist", "--mirror", "http://127.0.0.1:9/m/")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "kmnist is not on this machine" in err and "http://127.0.0.1:9/m/train-images-idx3-ubyte.gz" in err
    assert not (tmp_path / "xdg" / "mlplab").exists()


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mlplab", "datasets", "show", "no-such-set"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("mlplab: error: unknown dataset 'no-such-set'") and proc.stderr.count("\n") == 1


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_fetch_downloads_with_progress_into_the_cache(capsys, tmp_path, monkeypatch):
    import functools
    import http.server
    import shutil
    import threading

    from mlplab.data import sources

    www = tmp_path / "www"
    shutil.copytree(DEBIAN, www)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setitem(sources.NAMED, "fashion-mnist",
                        sources.Named(**{**sources.NAMED["fashion-mnist"].__dict__, "system_dirs": ()}))
    try:
        code, out, err = run(capsys, "datasets", "fetch", "fashion-mnist",
                             "--mirror", f"http://127.0.0.1:{httpd.server_address[1]}/")
    finally:
        httpd.shutdown()
        httpd.server_close()
    folder = tmp_path / "xdg" / "mlplab" / "fashion-mnist"
    assert code == 0, err
    assert "train-images-idx3-ubyte.gz" in out  # the progress bar's file label
    assert f"fashion-mnist: ready, 60,000 training and 10,000 test samples (cache {folder})" in out
    assert sorted(p.name for p in folder.iterdir()) == sorted(sources.IDX_FILES)
