"""`mlplab report` and `mlplab compare` end to end, on a real (tiny) training run of the offline digits data."""

import csv
import io
import json
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout

import pytest

from mlplab.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run (3 epochs, early stopping configured), shared by the tests; each test copies what it changes."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "digits", "--model", "32:relu,dropout:0.1,10:softmax", "--lr", "0.1",
              "--momentum", "0.9", "--epochs", "3", "--early-stop", "val_loss:5", "--out", str(out), "--quiet"])
    assert exit_info.value.code == 0
    return out


def copy_run(src, dst):
    shutil.copytree(src, dst)
    for stale in ("plots", "report.html", "embeddings"):
        target = dst / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    return dst


@pytest.fixture(scope="module")
def reported(trained, tmp_path_factory):
    """A copy of the run with its report written by the CLI: (run folder, exit code, stdout, stderr)."""
    run = copy_run(trained, tmp_path_factory.mktemp("reported") / "r")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exit_info, redirect_stdout(out), redirect_stderr(err):
        main(["report", str(run)])
    return run, exit_info.value.code, out.getvalue(), err.getvalue()


def test_report_writes_plots_and_a_self_contained_page(reported):
    run, code, out, err = reported
    assert code == 0, err
    assert err == ""  # no notes: model, data and metrics were all there
    lines = out.strip().splitlines()
    assert lines[-1] == str(run / "report.html")
    assert [line.split(":")[0].strip() for line in lines[:-1]] == ["curves", "confusion", "samples", "mistakes"]
    assert not list(run.glob("*.tmp")) and not list((run / "plots").glob(".*"))  # atomic writes left no temp files
    for name in ("curves", "confusion", "samples", "mistakes"):
        assert (run / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (run / "plots" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    html = (run / "report.html").read_text()
    assert html.count("<img ") == 4 and html.count('src="data:image/png;base64,') == 4
    assert not re.search(r"""(src|href)=["']?https?:""", html)
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.2%}" in html
    with open(run / "history.csv") as fh:
        epochs = list(csv.DictReader(fh))
    assert f"History table ({len(epochs)} epochs)" in html
    assert "dense_1" in html and "dropout_1" in html  # summary and layer configs
    assert "hold-out of the training data" in html  # validation source stated
    assert "could not be loaded" not in html  # model, data and metrics were all there


def test_report_quiet_prints_only_the_path(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "q")
    code, out, _ = run_cli(["report", str(run), "--quiet", "--mistakes", "0", "--title", "<tiny>"], capsys)
    assert code == 0 and out == f"{run / 'report.html'}\n"
    assert not (run / "plots" / "mistakes.png").exists()  # --mistakes 0: not computed
    html = (run / "report.html").read_text()
    assert "<h1>&lt;tiny&gt;</h1>" in html and "<tiny>" not in html


def test_report_inlines_embedding_explorers(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "e")
    emb = run / "embeddings"
    emb.mkdir()
    (emb / "dense_1-tsne.html").write_text("<!DOCTYPE html><html><body><p>explorer & <i>points</i></p></body></html>")
    (emb / "dense_1-tsne.json").write_text(json.dumps({"quality": {"knn_accuracy": 0.9123, "trustworthiness": 0.95}}))
    (emb / "notes.txt").write_text("not an explorer")  # other files in the folder are ignored
    code, _, err = run_cli(["report", str(run), "-q"], capsys)
    assert code == 0, err
    html = (run / "report.html").read_text()
    # a map named before the split was part of file names is a test-split map
    assert html.count("<iframe") == 1 and '<iframe class="explorer" title="dense_1 · t-SNE · test split"' in html
    assert "srcdoc=\"&lt;!DOCTYPE html&gt;&lt;html&gt;&lt;body&gt;&lt;p&gt;explorer &amp; &lt;i&gt;" in html
    assert "kNN accuracy 0.912, trustworthiness 0.950" in html


def test_report_without_the_dataset_still_shows_curves_and_metrics(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path / "nodata")
    config = json.loads((run / "config.json").read_text())
    config["data"]["name"] = str(tmp_path / "gone.npz")
    config["data"].pop("load_options", None)
    (run / "config.json").write_text(json.dumps(config))
    code, out, err = run_cli(["report", str(run)], capsys)
    assert code == 0, err
    assert err.startswith("note: The dataset could not be loaded")
    assert sorted(p.name for p in (run / "plots").glob("*.png")) == ["confusion.png", "curves.png"]
    html = (run / "report.html").read_text()
    assert "The dataset could not be loaded" in html and html.count("<img ") == 2


def test_report_errors_are_one_line(tmp_path, capsys):
    code, out, err = run_cli(["report", str(tmp_path / "missing")], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("mlplab: error: run directory") and "does not exist" in err


def test_compare_overlays_runs_and_links_reports(trained, tmp_path, capsys):
    a = copy_run(trained, tmp_path / "runs" / "a")
    b = copy_run(trained, tmp_path / "runs" / "b")
    rows = list(csv.DictReader(open(b / "history.csv")))
    for row in rows:  # make run b visibly different: a better validation loss
        row["val_loss"] = str(float(row["val_loss"]) * 0.5)
    with open(b / "history.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert run_cli(["report", str(a), "-q"], capsys)[0] == 0
    out_dir = tmp_path / "cmp"
    code, out, err = run_cli(["compare", str(a), str(b), "--out", str(out_dir), "--names", "no dropout,[bold]<b>"],
                             capsys)
    assert code == 0, err
    assert "no dropout" in out and "[bold]<b>" in out  # rich markup in a name is printed, not interpreted
    best_b = min(float(r["val_loss"]) for r in rows)
    assert f"{best_b:.4f}" in out
    for name in ("compare.png", "compare.svg", "compare.html"):
        assert (out_dir / name).stat().st_size > 0
    html = (out_dir / "compare.html").read_text()
    assert '<a href="../runs/a/report.html">report</a>' in html  # relative link to the run that has a report
    assert html.count(">report</a>") == 1  # b has no report yet: no dead link
    assert "<td>[bold]&lt;b&gt;</td>" in html


def test_compare_name_count_must_match(trained, tmp_path, capsys):
    code, _, err = run_cli(["compare", str(trained), str(trained), "--out", str(tmp_path), "--names", "one"], capsys)
    assert code == 2 and "--names gives 1 names for 2 runs" in err


@pytest.mark.browser
def test_real_report_in_chromium(reported, tmp_path):
    from test_report_browser import CHROMIUM, check_report_in_browser

    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed")
    run, code, _, _ = reported
    assert code == 0
    check_report_in_browser(run / "report.html", tmp_path, expect_images=4, expect_bokeh=0)


def test_cjk_and_emoji_class_names_and_paths_draw_without_glyph_warnings(tmp_path, capsys):
    """Issue 19, item 13: every figure of train/report/embed on such names, with no 'Glyph ... missing' warning."""
    import warnings

    import numpy as np
    from PIL import Image

    root = tmp_path / "データ 📁"
    rng = np.random.default_rng(0)
    for c, cls in enumerate(["猫", "犬 🐕", "bird"]):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray((rng.random((8, 8)) * 80 + 60 * c).astype(np.uint8)).save(root / cls / f"{i}.png")
    run = tmp_path / "実験 🚀"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for args in (["train", "--data", str(root), "--model", "8:relu,3:softmax", "--epochs", "2", "--out", str(run),
                      "-q"], ["embed", str(run), "--method", "pca", "-q"], ["report", str(run), "-q"]):
            code, _, err = run_cli(args, capsys)
            assert code == 0, err
            assert "Glyph" not in err
    glyphs = [str(w.message) for w in caught if "Glyph" in str(w.message)]
    assert glyphs == []
    assert "犬 🐕" in (run / "report.html").read_text()
