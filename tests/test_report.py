"""The HTML report built from plain values: structure, escaping, self-containment, inline images."""

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from mlplab.viz.curves import learning_curves
from mlplab.viz.figures import figure_bytes
from mlplab.viz.report import SECTIONS, Explorer, build_report, is_self_contained, validation_source

EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
# Namespace identifiers are strings, not requests; nothing else may look like a URL.
INERT_URLS = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xhtml", "http://www.w3.org/1999/xlink"}


def tiny_png(color=(68, 119, 170), size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def history(n=6):
    return [{"epoch": e, "loss": 1 / e, "accuracy": 0.5 + 0.05 * e, "val_loss": 1.2 / e + 0.02 * e,
             "val_accuracy": 0.5 + 0.04 * e, "lr": 0.01, "seconds": 0.25} for e in range(1, n + 1)]


def report_inputs(**overrides):
    names = ["T-shirt/top", EVIL, 'quote"s & amps']
    cm = [[50, 2, 1], [3, 40, 7], [0, 1, 60]]
    kw = dict(
        title='run <img src=x onerror="alert(2)">',
        run_path="/tmp/<runs>/r1",
        config={
            "format": "mlplab-run/1",
            "data": {"name": "data/<evil>.npz", "val_split": 0.1, "input_dim": 64, "input_shape": [8, 8],
                     "n_classes": 3, "class_names": names, "source": "file 'x' & \"y\""},
            "model": {"spec": "16:relu,<b>bold</b>,3:softmax", "input_dim": 64, "init": "glorot_uniform"},
            "train": {"loss": "categorical_crossentropy", "optimizer": "sgd", "lr": 0.01, "momentum": 0.0,
                      "batch_size": 32, "epochs": 6, "seed": 0, "early_stop": {"monitor": "val_loss", "patience": 4}},
        },
        history=history(),
        metrics={"test_loss": 0.31, "test_accuracy": 0.9, "n_test": 164, "class_names": names, "macro_f1": 0.88,
                 "per_class": [{"class": n, "precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 50} for n in names],
                 "confusion_matrix": cm, "data": "data/<evil>.npz", "split": "test"},
        summary_text='Model: "<mlp>"\n dense_1 (Dense)   (None, 16)   1,040\n',
        layer_configs=[{"name": "dense_1", "type": "Dense", "units": 16, "activation": "relu", "rate": None},
                       {"name": "dropout_1", "type": "Dropout", "units": None, "activation": None, "rate": 0.2}],
        figures={k: tiny_png() for k in ("curves", "confusion", "samples", "mistakes")},
        explorers=[Explorer(title=f"dense_1 · t-SNE {EVIL}", png=tiny_png((200, 0, 0)),
                            html="<!DOCTYPE html><html><body><p id=x>explorer</p>"
                                 "<script>document.getElementById('x').textContent = 'ok & <fine>';</script></body></html>",
                            note="kNN accuracy 0.910")],
        manifest={"device": "cpu", "environment": {"torch": "2.5 <cpu>", "python": "3.11"}, "seed": 0},
        notes=[f"stage note {EVIL}"],
        generated="2025-01-01 00:00 UTC",
    )
    kw.update(overrides)
    return kw


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(html):
    p = Tags()
    p.feed(html)
    return p.tags


def outside_srcdoc(html: str) -> str:
    return re.sub(r'srcdoc="[^"]*"', 'srcdoc=""', html)


def test_every_section_is_present_once_and_linked_from_the_toc():
    html = build_report(**report_inputs())
    tags = parse(html)
    ids = [a["id"] for t, a in tags if t == "section"]
    assert ids == [sid for sid, _ in SECTIONS]
    hrefs = [a["href"] for t, a in tags if t == "a" and a.get("href", "").startswith("#")]
    assert hrefs == [f"#{sid}" for sid, _ in SECTIONS]


def test_user_strings_appear_only_escaped():
    html = build_report(**report_inputs())
    assert EVIL not in html
    assert EVIL_ESCAPED in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<evil>" not in html and "<runs>" not in html and "<mlp>" not in html and "2.5 <cpu>" not in html
    assert "quote&quot;s &amp; amps" in html
    # the report itself runs no script: the only script lives (escaped) inside the explorer's srcdoc
    assert [t for t, _ in parse(html) if t == "script"] == []
    (iframe,) = [a for t, a in parse(html) if t == "iframe"]
    assert "<script>document.getElementById('x')" in iframe["srcdoc"]  # unescaped by the parser: the page itself
    assert "ok & <fine>" in iframe["srcdoc"]


def test_no_network_urls_and_a_restrictive_csp():
    html = build_report(**report_inputs())
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert urls <= INERT_URLS
    assert "//" not in "".join(a.get("src", "") + a.get("href", "") for _, a in parse(html) if not a.get("src", "").startswith("data:"))
    (csp,) = [a["content"] for t, a in parse(html) if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert "default-src 'none'" in csp and "img-src data:" in csp and "connect-src" not in csp


def test_every_img_is_an_inline_png_that_decodes():
    fig = learning_curves(history())
    real = figure_bytes(fig, dpi=40)
    html = build_report(**report_inputs(figures={"curves": real, "confusion": tiny_png(), "samples": tiny_png(),
                                                 "mistakes": tiny_png()}))
    srcs = [a["src"] for t, a in parse(html) if t == "img"]
    assert len(srcs) == 5  # four figures + the explorer's static picture
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()
            assert im.format == "PNG"
    # curves come second (after the data samples): the same picture, inlined as a palette copy (compact_png)
    with Image.open(io.BytesIO(base64.b64decode(srcs[1].split(",", 1)[1]))) as inline, \
            Image.open(io.BytesIO(real)) as original:
        assert inline.size == original.size
        diff = np.abs(np.asarray(inline.convert("RGB"), dtype=int) - np.asarray(original.convert("RGB"), dtype=int))
        assert diff.mean() < 1.0


def test_tables_hold_the_values():
    html = build_report(**report_inputs())
    assert "90.00%" in html  # test accuracy
    assert ">0.3100<" in html  # test loss, four decimals
    # per-class table: one row per class, escaped names
    perclass = html.split('class="perclass"')[1].split("</table>")[0]
    assert perclass.count("<tr>") == 1 + 3
    assert EVIL_ESCAPED in perclass
    # history table: one row per epoch
    hist = html.split('class="history"')[1].split("</table>")[0]
    assert hist.count("<tr>") == 1 + 6
    # best val loss of the scripted history: 1.2/e + 0.02e is smallest at e = 6 -> 0.32
    assert "best val loss" in html and "epoch 6" in html
    # layer configs: columns are the union of keys, None shown as a dash
    layers = html.split('class="layers"')[1].split("</table>")[0]
    assert "<th>rate</th>" in layers and "<td>0.2</td>" in layers
    # the environment manifest is flattened to dotted keys
    assert "environment.torch" in html and "2.5 &lt;cpu&gt;" in html


def test_validation_notes():
    assert validation_source({"data": {"val_split": 0.1}}) == "split"
    assert validation_source({"data": {"val_split": 0}}) == "none"
    assert validation_source({"data": {"val_split": 0.0, "validation": "test"}}) == "test"
    leaky = report_inputs()
    leaky["config"] = {**leaky["config"], "data": {**leaky["config"]["data"], "validation": "test"}}
    html = build_report(**leaky)
    assert 'class="callout warn"' in html and "Validation used the test set" in html
    html = build_report(**report_inputs())
    assert 'class="callout warn"' not in html and "hold-out of the training data" in html
    assert "leaks" in html  # the notebook's practice is named


def test_explorer_that_loads_from_the_network_is_not_inlined():
    page = '<html><head><script src="https://cdn.bokeh.org/bokeh.min.js"></script></head><body></body></html>'
    assert not is_self_contained(page)
    assert not is_self_contained("<link rel=stylesheet href=//fonts.example/x.css>")
    assert is_self_contained("<script>var s = 'http://www.w3.org/2000/svg';</script>")
    html = build_report(**report_inputs(explorers=[Explorer("dense_1 · MDS", html=page, png=tiny_png())]))
    assert "<iframe" not in html and "cdn.bokeh.org" not in html
    assert "loads scripts from the network" in html
    assert len([a for t, a in parse(html) if t == "img"]) == 5


def test_missing_parts_render_placeholders():
    html = build_report(title="empty", config={})
    ids = [a["id"] for t, a in parse(html) if t == "section"]
    assert ids == [sid for sid, _ in SECTIONS]
    for text in ("No training history", "No test metrics yet", "No embeddings computed", "No manifest.json"):
        assert text in html
    assert "<img" not in html


@pytest.mark.parametrize("value,expected", [(0.5, "0.5"), (1234, "1,234"), (float("nan"), "–"), (None, "–"),
                                            (1e-5, "1.000e-05"), (True, "true")])
def test_number_formatting(value, expected):
    from mlplab.viz.report import fmt_num

    assert fmt_num(value) == expected


def test_report_is_responsive():
    html = build_report(**report_inputs())
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "max-width:1100px" in html and "overflow-x:auto" in html and "max-width:100%" in html
    assert "@media (max-width:640px)" in html
    tables = html.count("<table")
    assert tables == html.count('<div class="scroll"><table')  # every table scrolls sideways on a phone
