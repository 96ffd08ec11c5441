"""`mlplab activations` and `mlplab embed` end to end on a tiny digits run."""

import json
import re

import numpy as np
import pytest

from mlplab.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "digits", "--model", "32:relu,dropout:0.1,16:relu,10:softmax", "--lr", "0.1",
              "--momentum", "0.9", "--epochs", "8", "--out", str(out), "--quiet"])
    assert exit_info.value.code == 0
    return out


def test_activations_npz(run_dir, tmp_path, capsys):
    out = tmp_path / "acts.npz"
    code, stdout, err = run_cli(["activations", str(run_dir), "--layer", "all", "--n", "100", "--out", str(out)],
                                capsys)
    assert code == 0, err
    assert "100 samples of the test split, layers dense_1, dense_2, dense_3" in stdout
    with np.load(out, allow_pickle=False) as z:
        assert sorted(z.files) == ["confidences", "dense_1", "dense_2", "dense_3", "indices", "labels",
                                   "predictions"]
        assert z["dense_1"].shape == (100, 32) and z["dense_2"].shape == (100, 16)
        assert np.array_equal(z["predictions"], z["dense_3"].argmax(1))
        assert np.allclose(z["confidences"], z["dense_3"].max(1))
        assert len(set(z["indices"].tolist())) == 100 and (z["labels"] >= 0).all()
        assert (z["predictions"] == z["labels"]).mean() > 0.8  # the run learned something


def test_embed_all_layers_writes_linked_pictures(run_dir, capsys):
    code, stdout, err = run_cli(["embed", str(run_dir), "--layer", "all", "--method", "pca"], capsys)
    assert code == 0, err
    table = stdout.splitlines()
    assert table[0] == "pca of 360 test samples"
    assert re.match(r"layer\s+10-NN acc\s+trust\s+seconds", table[1])
    assert [ln.split()[0] for ln in table[2:6]] == ["input", "dense_1", "dense_2", "dense_3"]
    folder = run_dir / "embeddings"
    for ext in ("png", "html", "npz", "json"):
        assert str(folder / f"all-pca.{ext}") in stdout
    with np.load(folder / "all-pca.npz", allow_pickle=False) as z:
        assert list(z["layers"]) == ["input", "dense_1", "dense_2", "dense_3"]
        assert z["coords_dense_2"].shape == (360, 2) and z["coords_dense_2"].dtype == np.float32
        # separation grows with depth: the output layer's map beats the pixels'
        assert z["knn_accuracy"][-1] > z["knn_accuracy"][0]
    meta = json.loads((folder / "all-pca.json").read_text())
    assert set(meta["layers"]) == {"input", "dense_1", "dense_2", "dense_3"} and meta["n"] == 360
    page = (folder / "all-pca.html").read_text()
    assert page.count("data:image/png;base64,") >= 360
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_embed_default_layer_tsne(run_dir, capsys):
    code, stdout, err = run_cli(["embed", str(run_dir), "--method", "tsne", "--n", "150", "--seed", "1"], capsys)
    assert code == 0, err
    assert stdout.splitlines()[2].split()[0] == "dense_2"  # the last hidden layer by default
    meta = json.loads((run_dir / "embeddings" / "dense_2-tsne-n150-seed1.json").read_text())
    assert meta["quality"]["knn_accuracy"] > 0.7 and meta["quality"]["trustworthiness"] > 0.9
    assert meta["layers"]["dense_2"]["params"]["seed"] == 1


@pytest.mark.parametrize("args, message", [
    (["embed", "{run}", "--layer", "dense_7"], "unknown layer 'dense_7'; choose from: all, input, dense_1, dropout_1"),
    (["embed", "{run}", "--n", "5000", "--method", "pca"], "asked for 5000 samples but the split has only 360"),
    (["activations", "{run}", "--n", "361"], "asked for 361 samples but the split has only 360"),
    (["activations", "{run}", "--layer", "nope"], "unknown layer 'nope'"),
    (["embed", "{missing}"], "does not exist"),
])
def test_errors_are_one_line_exit_2(run_dir, tmp_path, capsys, args, message):
    args = [a.format(run=run_dir, missing=tmp_path / "missing") for a in args]
    code, stdout, err = run_cli(args, capsys)
    assert code == 2
    assert err.startswith("mlplab: error: ") and message in err and err.count("\n") == 1


def test_embed_umap_missing_extra(run_dir, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "umap", None)
    code, _, err = run_cli(["embed", str(run_dir), "--method", "umap", "--n", "50"], capsys)
    assert code == 2 and "UMAP needs the optional extra: pip install 'mlplab[umap]'" in err


def test_embed_of_a_dead_layer_is_a_clear_picture_not_a_crash(run_dir, tmp_path, capsys):
    """A layer whose units are all dead (every sample's activations identical) used to reach openTSNE's FFT code
    with a zero spread, which crashed the process with a segmentation fault. Now: points at the origin and a note."""
    import shutil

    from safetensors.numpy import load_file, save_file

    dead = tmp_path / "dead"
    shutil.copytree(run_dir, dead)
    weights = load_file(str(dead / "model.safetensors"))
    first = sorted(k for k in weights if k.endswith("weight"))[0]  # dense_1's weights
    weights[first] = np.zeros_like(weights[first])
    weights[first.replace("weight", "bias")] = -np.ones_like(weights[first.replace("weight", "bias")])
    save_file(weights, str(dead / "model.safetensors"))
    # (digits' 1,437 training images take the Barnes-Hut path, which returned NaN coordinates here; the FFT path
    # above 2,500 points crashed: tests/test_inspect_embed.py covers that one through the library)
    for method in ("tsne", "mds"):
        code, stdout, err = run_cli(["embed", str(dead), "--layer", "dense_1", "--method", method, "--split", "train"],
                                    capsys)
        assert code == 0, err
        meta = json.loads((dead / "embeddings" / f"dense_1-{method}-train.json").read_text())
        assert "identical" in meta["layers"]["dense_1"]["note"]
        with np.load(dead / "embeddings" / f"dense_1-{method}-train.npz", allow_pickle=False) as z:
            assert (z["coords_dense_1"] == 0).all()


# ---- issue 19: maps of other splits/draws never overwrite each other (11), --out (12), no hidden layer (15) -------
def test_maps_of_another_split_n_or_seed_do_not_overwrite_the_test_map(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("embeddings"))
    for extra in ([], ["--split", "val"], ["--n", "100"], ["--seed", "3"]):
        code, _, err = run_cli(["embed", str(run), "--layer", "dense_1", "--method", "pca", "-q", *extra], capsys)
        assert code == 0, err
    folder = run / "embeddings"
    assert sorted(p.name for p in folder.glob("*.json")) == [
        "dense_1-pca-n100.json", "dense_1-pca-seed3.json", "dense_1-pca-val.json", "dense_1-pca.json"]
    assert json.loads((folder / "dense_1-pca.json").read_text())["split"] == "test"
    assert json.loads((folder / "dense_1-pca-val.json").read_text())["split"] == "val"
    assert "· val split ·" in (folder / "dense_1-pca-val.html").read_text()  # the page's heading
    code, _, err = run_cli(["report", str(run), "-q"], capsys)
    page = (run / "report.html").read_text()
    assert code == 0, err
    for heading in ("dense_1 · PCA · test split · 360 points</h3>", "dense_1 · PCA · val split · ",
                    "dense_1 · PCA · test split · 100 points</h3>", "dense_1 · PCA · test split · 360 points · seed 3</h3>"):
        assert f"<h3>{heading}" in page


def test_embed_and_report_of_a_read_only_run_write_elsewhere(run_dir, tmp_path, capsys):
    import os
    import shutil
    import stat

    run, maps, rep = tmp_path / "ro", tmp_path / "maps", tmp_path / "rep"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("embeddings", "plots", "report.html"))
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for p in [run, *run.rglob("*")]:
        os.chmod(p, os.stat(p).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        for method in ("pca", "mds"):
            code, _, err = run_cli(["embed", str(run), "--method", method, "--n", "100", "--out", str(maps), "-q"],
                                   capsys)
            assert code == 0, err
        code, out, err = run_cli(["report", str(run), "--out", str(rep), "--maps-from", str(maps), "--maps",
                                  "*-pca*", "-q"], capsys)
        assert code == 0, err
    finally:
        for p in [run, *run.rglob("*")]:
            os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing written into the run
    assert out.strip() == str(rep / "report.html") and (rep / "plots" / "curves.png").exists()
    page = (rep / "report.html").read_text()
    assert "<h3>dense_2 · PCA · test split · 100 points</h3>" in page and "<h3>dense_2 · MDS" not in page
    assert sorted(p.name for p in maps.glob("*.json")) == ["dense_2-mds-n100.json", "dense_2-pca-n100.json"]
    code, _, err = run_cli(["report", str(run_dir), "--out", str(rep), "--no-maps", "-q"], capsys)
    assert code == 0 and "<iframe" not in (rep / "report.html").read_text()


def test_a_model_without_hidden_layers_asks_which_layer(tmp_path, capsys):
    run = tmp_path / "flat"
    assert run_cli(["train", "--data", "digits", "--model", "10:softmax", "--epochs", "1", "--out", str(run), "-q"],
                   capsys)[0] == 0
    code, _, err = run_cli(["embed", str(run), "--method", "pca"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no hidden layer" in err and "--layer input" in err and "dense_1 (the output)" in err
    code, _, err = run_cli(["embed", str(run), "--layer", "dense_9", "--method", "pca"], capsys)
    assert code == 2 and "choose from: all, input, dense_1" in err
    code, _, err = run_cli(["embed", str(run), "--layer", ",", "--method", "pca"], capsys)
    assert code == 2 and "no layer given; choose from: all, input, dense_1" in err
    code, _, err = run_cli(["embed", str(run), "--layer", "input", "--method", "pca", "-q"], capsys)
    assert code == 0, err
