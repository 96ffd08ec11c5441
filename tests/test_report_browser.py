"""The report opened in headless Chromium: no console errors, every section and image present and loaded,
the Bokeh explorers rendered (inline with one BokehJS, or framed), and no request leaving the machine; and the
size of a report with three maps."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from mlplab.viz.report import SECTIONS, Explorer, build_report


CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium",
                             shutil.which("google-chrome")) if p and Path(p).exists()), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--hide-scrollbars"]
# Chromium's own service traffic (updates, accounts) shows up in the net log despite the flags; it is not the page's.
BROWSER_HOSTS = re.compile(r"^https?://([a-z0-9-]+\.)*(google\.com|googleapis\.com|gvt1\.com)(/|:|$)")
# Console lines that mean the page misbehaved (this Chromium logs page errors at INFO level, so match the text).
BAD_CONSOLE = re.compile(r"Uncaught|violates the following Content Security Policy|Refused to|Failed to load|"
                         r"net::ERR_|TypeError|ReferenceError|SyntaxError", re.IGNORECASE)

# Injected into a copy of the report only: counts loaded images and rendered Bokeh documents, writes a marker.
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () { setTimeout(function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var frames = Array.prototype.slice.call(document.querySelectorAll('iframe'));
  var bokeh = frames.filter(function (f) {
    try { var B = f.contentWindow.Bokeh; return !!B && Object.keys(B.index || {}).length > 0; } catch (e) { return false; }
  }).length;
  var roots = Array.prototype.slice.call(document.querySelectorAll('.bokeh-root')).filter(function (r) {
    return !!r.firstElementChild && !!r.firstElementChild.shadowRoot;  // BokehJS drew a view into it
  }).length;
  var docs = window.Bokeh && window.Bokeh.documents ? window.Bokeh.documents.length : 0;
  var d = document.createElement('div'); d.id = 'mlplab-check';
  d.setAttribute('data-roots', roots); d.setAttribute('data-documents', docs);
  d.setAttribute('data-images', imgs.length); d.setAttribute('data-images-ok', ok);
  d.setAttribute('data-frames', frames.length); d.setAttribute('data-bokeh', bokeh);
  document.body.appendChild(d);
}, 300); });
</script>"""


def chromium(args, tmp_path: Path, name: str):
    netlog = tmp_path / f"{name}.netlog.json"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / (name + '-profile')}", f"--log-net-log={netlog}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    return proc, netlog


def console_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line and BAD_CONSOLE.search(line)]


def page_requests(netlog: Path) -> list[str]:
    if not netlog.exists():
        return []
    urls = set(re.findall(r'"url":"([^"]+)"', netlog.read_text(errors="replace")))
    return sorted(u for u in urls if re.match(r"^(https?|wss?|ftp)://", u) and not BROWSER_HOSTS.match(u))


def check_report_in_browser(report: Path, tmp_path: Path, *, expect_images: int, expect_bokeh: int,
                            expect_inline: int = 0) -> Path:
    """Screenshot the report and load an instrumented copy; assert it is clean. Returns the screenshot path.

    expect_bokeh: explorers framed (srcdoc) and drawn there; expect_inline: explorers drawn in the page itself."""
    shot = tmp_path / "report.png"
    proc, netlog = chromium(["--window-size=1280,2000", "--virtual-time-budget=4000", f"--screenshot={shot}",
                             report.resolve().as_uri()], tmp_path, "shot")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_problems(proc.stderr) == []
    assert page_requests(netlog) == []
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        colours = im.convert("L").getextrema()
        assert colours[0] < 100 and colours[1] > 200  # not a blank page

    html = report.read_text(encoding="utf-8")
    probe = report.with_name(report.stem + ".probe.html")
    probe.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    proc, netlog = chromium(["--virtual-time-budget=6000", "--dump-dom", probe.resolve().as_uri()], tmp_path, "dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_problems(proc.stderr) == []
    assert page_requests(netlog) == []
    dom = proc.stdout
    marker = re.search(r'<div id="mlplab-check"([^>]*)>', dom)
    assert marker, "the probe script did not run"
    attrs = dict(re.findall(r'data-([a-z-]+)="(\d+)"', marker.group(1)))
    assert int(attrs["images"]) == expect_images
    assert attrs["images-ok"] == attrs["images"]  # every image decoded (naturalWidth > 0)
    assert int(attrs["bokeh"]) == expect_bokeh == int(attrs["frames"])
    assert int(attrs["roots"]) == expect_inline == int(attrs["documents"])
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in dom
    return shot


def bokeh_page() -> str:
    from bokeh.embed import file_html
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    source = ColumnDataSource({"x": [0.0, 1.0, 2.0], "y": [1.0, 0.0, 2.0], "label": ["<b>a</b>", "b", "c"]})
    p = figure(title="dense_1 t-SNE", sizing_mode="stretch_width", height=360, tools="pan,wheel_zoom,reset")
    p.scatter("x", "y", source=source, size=8)
    p.add_tools(HoverTool(tooltips=[("label", "@label")]))
    return file_html(p, INLINE, "explorer")


@pytest.mark.browser
@needs_chromium
def test_synthetic_report_renders_cleanly_offline(tmp_path):
    from test_report import report_inputs

    kw = report_inputs()
    kw["explorers"] = [Explorer("dense_1 · t-SNE <x>", html=bokeh_page(), note="kNN accuracy 0.9")]
    report = tmp_path / "report.html"
    report.write_text(build_report(**kw), encoding="utf-8")
    check_report_in_browser(report, tmp_path, expect_images=4, expect_bokeh=1)


@pytest.mark.browser
@needs_chromium
def test_console_errors_and_requests_are_detected(tmp_path):
    """The checks above must be able to fail: a page with a script error and a blocked fetch trips them."""
    from mlplab.viz.report import CSP

    page = tmp_path / "bad.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}"></head>'
                    '<body><img src="https://example.invalid/x.png"><script>undefinedFunction()</script></body></html>')
    proc, _ = chromium(["--virtual-time-budget=1000", "--dump-dom", page.as_uri()], tmp_path, "bad")
    problems = console_problems(proc.stderr)
    assert any("Uncaught" in p for p in problems)
    assert any("Content Security Policy" in p for p in problems)
    assert json.dumps(problems)  # the lines are plain text, printable in a failure message


# --- a report with three maps: BokehJS once, a few MB, drawn without errors -------------------------------
BUNDLE_MARK = "/* BEGIN bokeh.min.js */"  # how bokeh.resources starts its inline core bundle


@pytest.fixture(scope="module")
def three_maps():
    """Three 1,000-point explorers as `mlplab embed` writes them (two-panel and one-panel pages, thumbnails)."""
    from mlplab.viz.explorer import explorer_html
    from mlplab.viz.thumbnails import thumbnail_uris

    d = load_digits()
    n = 1000
    rng = np.random.default_rng(0)
    y, thumbs = d.target[:n], thumbnail_uris(d.images[:n])
    names = [str(i) for i in range(10)]
    names[4] = "<script>alert(4)</script>"
    preds = y.copy()
    preds[::13] = (preds[::13] + 1) % 10
    pages = []
    for method, layers in (("tsne", ["dense_2"]), ("mds", ["dense_2"]), ("tsne", ["dense_1", "dense_2"])):
        panels = {layer: rng.normal(size=(n, 2)) for layer in layers}
        pages.append(explorer_html(panels, y, names, predictions=preds, confidences=rng.random(n),
                                   indices=np.arange(n), thumbnails=thumbs, method=method, title=f"run <b>{method}</b>"))
    return pages, thumbs


def three_map_report(three_maps) -> str:
    from test_report import report_inputs

    pages, _ = three_maps
    explorers = [Explorer(f"map {i} <i>", html=page) for i, page in enumerate(pages)]
    return build_report(**report_inputs(explorers=explorers))


def test_a_report_with_three_maps_carries_bokehjs_once(three_maps):
    pages, thumbs = three_maps
    html = three_map_report(three_maps)
    assert all(page.count(BUNDLE_MARK) == 1 for page in pages)  # each standalone page is complete on its own
    assert html.count(BUNDLE_MARK) == 1
    assert len(html.encode("utf-8")) <= 3_000_000
    assert sum(len(page.encode("utf-8")) for page in pages) > 3_000_000  # what three framed copies would weigh
    assert html.count('class="mlplab-explorer"') == 3 and "<iframe" not in html
    assert all(t in html for t in thumbs)  # every hover thumbnail is still there, once: the maps share them
    assert all(html.count(t) == thumbs.count(t) for t in thumbs[:100])
    assert "<script>alert(4)" not in html and "<i>" not in html and "<b>tsne" not in html


@pytest.mark.browser
@needs_chromium
def test_a_report_with_three_maps_draws_them_without_errors(three_maps, tmp_path):
    report = tmp_path / "report.html"
    report.write_text(three_map_report(three_maps), encoding="utf-8")
    check_report_in_browser(report, tmp_path, expect_images=4, expect_bokeh=0, expect_inline=3)
