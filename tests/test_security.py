"""Security pass: nothing unpickles or executes input, user strings are escaped in every HTML page, outputs stay
inside the chosen folder; and the numerics checks (NaN/inf rejected at load, divergence stops cleanly)."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import fuzz_targets
from mlplab.errors import MlplabError
from mlplab.runs.folder import open_run

SRC = Path(__file__).resolve().parents[1] / "src" / "mlplab"
SOURCES = sorted(SRC.rglob("*.py"))

# pattern -> why it is banned
BANNED = {
    r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib|shelve|marshal)\b|\bpickle\.loads?\(": "unpickling runs code",
    r"\btorch\.load\(": "torch.load unpickles (use safetensors)",
    r"(?<![.\w])eval\(|(?<![.\w])exec\(": "eval/exec run strings as code",
    r"\byaml\.(load|unsafe_load)\(": "yaml.load can build arbitrary objects",
    r"shell\s*=\s*True|\bos\.system\(|\bos\.popen\(": "a shell interprets its input",
}
NP_LOAD = re.compile(r"\bnp\.load\(|\bnumpy\.load\(")


def _code_lines(path: Path):
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        yield lineno, line


def _np_load_calls(text: str):
    """Each np.load( call with its full argument text (calls may span lines)."""
    for m in NP_LOAD.finditer(text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        yield text.count("\n", 0, m.start()) + 1, text[m.start():i]


NP_LOAD_XFAIL: set = set()  # owned by another engineer: see the xfail reason below


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_unsafe_loading_or_execution(path, request):
    rel = str(path.relative_to(SRC))
    problems = []
    for lineno, line in _code_lines(path):
        for pattern, why in BANNED.items():
            if re.search(pattern, line) and '"""' not in line:
                problems.append(f"{rel}:{lineno}: {why}: {line.strip()}")
    text = path.read_text(encoding="utf-8")
    for lineno, call in _np_load_calls(text):
        if "allow_pickle=False" not in call:
            problems.append(f"{rel}:{lineno}: np.load without allow_pickle=False: {call}")
    if rel in NP_LOAD_XFAIL:
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "inspect/activations.py calls np.load(final, mmap_mode='r') without an explicit allow_pickle=False "
            "(numpy's default is False, so it is safe today; the rule is to say so at every call)")))
    assert not problems, "\n".join(problems)


def test_the_grep_catches_what_it_should():
    bad = ["import pickle", "x = pickle.loads(b)", "torch.load(f)", "eval(s)", "exec(code)", "yaml.load(f)",
           "subprocess.run(c, shell=True)", "os.system(c)"]
    for line in bad:
        assert any(re.search(p, line) for p in BANNED), line
    for line in ["model.eval()", "self.eval()", "np.load(p, allow_pickle=False)", "evaluate(x)"]:
        assert not any(re.search(p, line) for p in BANNED), line
    calls = list(_np_load_calls("a = np.load(\n    p,\n    mmap_mode='r')\nb = np.load(q, allow_pickle=False)\n"))
    assert [("allow_pickle=False" in c) for _, c in calls] == [False, True]


# --- HTML escaping ------------------------------------------------------------------------------------------
PAYLOAD = "<img src=x onerror=alert(1)>"
NOTE_PAYLOAD = "</script><script>alert(2)</script><img src=y onerror=alert(3)>&amp;\"'"


class _Tags(HTMLParser):
    """Every element and attribute a browser would build; srcdoc documents are parsed the same way."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.nested: list[str] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if attrs.get("srcdoc"):
            self.nested.append(attrs["srcdoc"])
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text.append(data)


def injected(page: str, depth: int = 0) -> list[str]:
    """Elements or handlers that come from the payloads: <img src=x|y>, on* attributes, inline alert()."""
    parser = _Tags()
    parser.feed(page)
    found = []
    for tag, attrs in parser.tags:
        if tag == "img" and attrs.get("src") in ("x", "y"):
            found.append(f"depth {depth}: <img src={attrs['src']}>")
        found += [f"depth {depth}: {tag} {k}=" for k in attrs if k.startswith("on")]
    found += [f"depth {depth}: script runs alert" for text in parser.script_text if "alert(2)" in text
              and not text.lstrip().startswith(("{", "["))]
    for doc in parser.nested:
        found += injected(doc, depth + 1)
    return found


def _image_folder(root: Path, classes: list[str], per_class: int = 30) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = (rng.random((8, 8)) * 60 + 60 * k).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory):
    """Two tiny runs named and labelled with HTML payloads, trained on an image folder whose class names are
    payloads too."""
    from mlplab.runs.config import TrainOptions
    from mlplab.runs.session import train_run

    base = tmp_path_factory.mktemp("hostile")
    # no "/" in a class name: it is a folder name ("<b>bold</b>" made a nested folder and a class of 0 samples)
    data = _image_folder(base / "data", [PAYLOAD, "ok & <b>bold<b>", "quote\"'"])
    runs = []
    for seed in (0, 1):
        opts = TrainOptions.from_mapping(dict(data=str(data), model="8:relu,3:softmax", epochs=2, batch_size=8,
                                              val_split=0.2, seed=seed))
        runs.append(train_run(opts, base / f"{PAYLOAD} run{seed}").path)
    return base, runs


def test_report_compare_and_explorer_pages_escape_user_strings(hostile_runs):
    from mlplab.runs.report import write_run_report

    base, runs = hostile_runs
    code, _, err = fuzz_targets.run_cli(["report", str(runs[0]), "--title", PAYLOAD, "--mistakes", "4",
                                         "--samples", "2", "-q"])
    assert code == 0, err
    write_run_report(open_run(runs[1]), notes=[NOTE_PAYLOAD], n_mistakes=4, samples_per_class=2)
    code, _, err = fuzz_targets.run_cli(["compare", *map(str, runs), "--out", str(base / "cmp"), "--title", PAYLOAD,
                                         "--names", f"{PAYLOAD},{NOTE_PAYLOAD.replace(',', ';')}"])
    assert code == 0, err
    code, _, err = fuzz_targets.run_cli(["embed", str(runs[0]), "--method", "pca", "--n", "12", "-q"])
    assert code == 0, err
    pages = [runs[0] / "report.html", runs[1] / "report.html", base / "cmp" / "compare.html",
             *sorted((runs[0] / "embeddings").glob("*.html"))]
    assert len(pages) >= 4
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert injected(text) == [], page
        assert PAYLOAD not in text.replace("\\u003c", "<") or "&lt;img" in text, page
    # the strings are shown (escaped), not dropped
    assert "&lt;img src=x onerror=alert(1)&gt;" in (runs[0] / "report.html").read_text(encoding="utf-8")
    assert "alert(2)" in (runs[1] / "report.html").read_text(encoding="utf-8")


def test_the_checker_sees_an_unescaped_payload():
    assert injected(f"<p>{PAYLOAD}</p>")
    assert injected(f'<iframe srcdoc="<p>{PAYLOAD.replace("<", "&lt;")}</p>"></iframe>')  # one escape, one parse
    assert not injected(f'<iframe srcdoc="<p>{PAYLOAD.replace("<", "&amp;lt;")}</p>"></iframe>')
    assert injected("<script>alert(2)</script>")


# --- outputs stay inside the chosen folder ------------------------------------------------------------------
def test_experiment_stage_names_cannot_leave_the_output_folder(tmp_path):
    from mlplab.runs.experiment import load_experiment

    for name in ["../escape", "..", "a/../../b", "/abs", "..\\\\x", "."]:
        path = tmp_path / "e.toml"
        path.write_text(f'data = "digits"\n[[stage]]\nname = {json.dumps(name)}\nepochs = 1\n')
        with pytest.raises(MlplabError, match="plain folder name"):
            load_experiment(path)


def test_symlinked_output_folders_in_a_run_are_not_followed(hostile_runs, tmp_path):
    """A run directory whose plots/ or embeddings/ is a symlink to somewhere else: report/embed refuse to write
    through it (one error line), and nothing appears in the link's target."""
    import shutil

    _, runs = hostile_runs
    run = tmp_path / "linked"
    shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns("plots", "embeddings", "report.html"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "plots").symlink_to(outside, target_is_directory=True)
    code, _, err = fuzz_targets.run_cli(["report", str(run), "-q"])
    assert code == 2 and "symlink" in err and err.count("\n") == 1, err
    assert list(outside.iterdir()) == []
    (run / "plots").unlink()
    (run / "embeddings").symlink_to(outside, target_is_directory=True)
    code, _, err = fuzz_targets.run_cli(["embed", str(run), "--method", "pca", "--n", "12", "-q"])
    assert code == 2 and "symlink" in err and err.count("\n") == 1, err
    assert list(outside.iterdir()) == []


def test_overwrite_removes_a_symlink_never_its_target(hostile_runs, tmp_path):
    import shutil

    _, runs = hostile_runs
    run = tmp_path / "r"
    shutil.copytree(runs[0], run)
    shutil.rmtree(run / "plots", ignore_errors=True)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("keep")
    (run / "plots").symlink_to(precious, target_is_directory=True)
    code, _, err = fuzz_targets.run_cli(["train", "--data", "digits", "--model", "8:relu,10:softmax", "--epochs", "1",
                                         "--out", str(run), "--overwrite", "-q"])
    assert code == 0, err
    assert (precious / "keep.txt").read_text() == "keep" and not (run / "plots").is_symlink()


# --- numerics -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_predict_npy_with_nan_or_inf_is_rejected(tmp_path, bad):
    from mlplab.data.inputs import load_image

    x = np.full((8, 8), 0.5, np.float32)
    x[3, 4] = bad
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(MlplabError, match="NaN or infinite"):
        load_image(tmp_path / "x.npy", (8, 8))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.float64])
def test_predict_npy_pixels_scale_like_training_data(tmp_path, dtype):
    """Whole numbers 0..255 in any numeric dtype are 8-bit pixels (as data.validate.pixels treats a training
    CSV or NPZ), so predict divides them by 255 exactly as training did; [0, 1] floats are taken as they are."""
    from mlplab.data import to_features
    from mlplab.data.inputs import load_image

    x = np.arange(64).reshape(8, 8) * 4  # 0..252
    np.save(tmp_path / "x.npy", x.astype(dtype))
    got = load_image(tmp_path / "x.npy", (8, 8))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(to_features(got[None]), to_features(x.astype(np.uint8)[None]))
    np.save(tmp_path / "f.npy", (x / 255).astype(np.float32))
    np.testing.assert_array_equal(load_image(tmp_path / "f.npy", (8, 8)), (x / 255).astype(np.float32))
    np.save(tmp_path / "big.npy", (x * 2).astype(np.int64))  # 0..504 is neither
    with pytest.raises(MlplabError, match=r"must be in \[0, 1\]"):
        load_image(tmp_path / "big.npy", (8, 8))


def test_npy_header_claiming_terabytes_is_refused_before_allocating(tmp_path):
    import tracemalloc

    from mlplab.data.inputs import load_image

    (tmp_path / "x.npy").write_bytes(fuzz_targets._npy_with_header((10**12,), "<f8", b"\0" * 64))
    tracemalloc.start()
    with pytest.raises(MlplabError, match="header claims shape"):
        load_image(tmp_path / "x.npy", (8, 8))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_npz_member_claiming_terabytes_is_refused_before_allocating(tmp_path):
    import tracemalloc
    import zipfile

    from mlplab.data.loader import load_path

    with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
        z.writestr("x.npy", fuzz_targets._npy_with_header((10**6, 10**6), "|u1", b"\0" * 64))
        buf = io.BytesIO()
        np.save(buf, np.zeros(3, np.int64))
        z.writestr("y.npy", buf.getvalue())
    tracemalloc.start()
    with pytest.raises(MlplabError, match="header claims shape"):
        load_path(tmp_path / "d.npz", "d.npz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_png_chunk_claiming_gigabytes_is_not_allocated(tmp_path):
    """Pillow reads a trailing chunk with fp.read(claimed length); a real file object allocates that up front."""
    import struct
    import tracemalloc
    import zlib

    from PIL import Image

    from mlplab.data.inputs import load_image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    raw = buf.getvalue()
    idat = raw.index(b"IDAT") - 4
    length = struct.unpack(">I", raw[idat:idat + 4])[0]
    body = raw[idat + 8:idat + 8 + length]
    forged = raw[:idat] + struct.pack(">I", 3_000_000_000) + b"IDAT" + body + struct.pack(
        ">I", zlib.crc32(b"IDAT" + body)) + raw[idat + 12 + length:]
    (tmp_path / "x.png").write_bytes(forged)
    tracemalloc.start()
    try:
        load_image(tmp_path / "x.png", (8, 8))
    except MlplabError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 << 20


def test_image_bigger_than_the_limit_is_one_error(tmp_path):
    from mlplab.data.inputs import load_image

    (tmp_path / "x.png").write_bytes(fuzz_targets._png_claiming(100_000, 100_000))
    with pytest.raises(MlplabError, match="pixels"):
        load_image(tmp_path / "x.png", (8, 8))


def test_divergence_after_a_good_epoch_keeps_that_checkpoint(tmp_path):
    """Epoch 1 trains normally; then the learning rate jumps to 1e20 (a callback, as a schedule gone wrong would)
    and epoch 2 diverges: the error names epoch 2 and a batch, and epoch 1's checkpoint and weights still load
    and resume."""
    from mlplab.runs.config import TrainOptions
    from mlplab.train.callbacks import LambdaCallback
    from mlplab.runs.session import resume_run, train_run
    from mlplab.train.trainer import TrainingDiverged

    def blow_up(trainer, epoch, n_batches):
        if epoch == 1:
            for group in trainer.optimizer.param_groups:
                group["lr"] = 1e20

    opts = TrainOptions.from_mapping(dict(data="digits", model="32:relu,10:softmax", epochs=3, batch_size=64,
                                          seed=0, lr=0.05))
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, batch \d+;.*last good checkpoint \(epoch 1\)") as info:
        train_run(opts, tmp_path / "run", callbacks=[LambdaCallback(on_epoch_begin=blow_up)])
    assert "\n" not in str(info.value)
    run = open_run(tmp_path / "run")
    assert [r["epoch"] for r in run.history()] == [1]
    assert all(torch.isfinite(p).all() for p in run.model().parameters())
    resumed = resume_run(tmp_path / "run")  # the saved optimizer state still has the good lr
    assert [r["epoch"] for r in resumed.history.rows] == [1, 2, 3]


def test_divergence_in_the_cli_is_one_line_and_a_nonzero_exit(tmp_path):
    code, _, err = fuzz_targets.run_cli(["train", "--data", "digits", "--model", "32:relu,10:softmax", "--epochs", "2",
                                         "--lr", "1e20", "--out", str(tmp_path / "run"), "-q"])
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(r"NaN or infinite at epoch 1, batch \d+", err)


# --- bugs in modules owned by others (strict xfail: they pass once fixed) -------------------------------------
def test_spec_with_a_huge_units_number_is_one_error():
    from mlplab.model import parse_spec

    with pytest.raises(MlplabError):
        parse_spec("1" * 5000 + ":relu")


def test_model_too_large_to_allocate_is_one_error():
    """A spec within the 1,000,000-unit cap can still need terabytes (1000000:relu,1000000:relu = 4 TB):
    one error line, not an allocator RuntimeError (model/mlp.py checks the parameter count)."""
    code, _, err = fuzz_targets.run_cli(["summary", "--model", "1000000:relu,1000000:relu,10:softmax",
                                         "--input", "784"])
    assert code == 2 and err.count("\n") == 1
