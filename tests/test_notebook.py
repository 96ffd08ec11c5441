"""examples/notebook.ipynb executed end to end by a real Jupyter kernel, then converted to HTML and opened in
headless Chromium: every cell runs, the objects display themselves, progress stays a few lines per epoch,
the Bokeh charts render without JavaScript errors and without any request leaving the machine.

The notebook runs on a subset (its `parameters` cell is replaced): 6,000 training images, 3 epochs, 1,000
points mapped. Set MLPLAB_NOTEBOOK_SCREENSHOT=PATH to keep the screenshot (docs/notebook.png is made so).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the dev extra: pip install 'mlplab[dev]'")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
nbconvert = pytest.importorskip("nbconvert")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebook.ipynb"
EPOCHS = 3
PARAMETERS = f"TRAIN_SAMPLES = 6_000\nEPOCHS = {EPOCHS}\nN_POINTS = 1_000\nSEED = 0\n"
# XML namespace names and BokehJS's default server address (ws://localhost, never used offline) are not fetched
EXTERNAL = re.compile(r"\b(?:https?://(?!www\.w3\.org/)|wss?://(?!localhost[:/])|ftp://)")

def fashion_mnist_available() -> bool:
    from mlplab.data.sources import locate

    place, _ = locate("fashion-mnist")
    return place is not None


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and set(re.findall(r"^(\w+) =", tagged[0].source, re.M)) == set(
        re.findall(r"^(\w+) =", PARAMETERS, re.M))


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST is not on this machine (mlplab datasets fetch fashion-mnist)")
    tmp = tmp_path_factory.mktemp("notebook")
    # A kernelspec of our own: this interpreter (the venv under test) with this source tree first on the path,
    # whatever kernels the user has installed.
    spec_dir = tmp / "jupyter" / "kernels" / "mlplab-test"
    spec_dir.mkdir(parents=True)
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mlplab test", "language": "python", "env": env}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(tmp / "jupyter"), os.environ.get("JUPYTER_PATH", "")])

    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = PARAMETERS
    client = nbclient.NotebookClient(nb, kernel_name="mlplab-test", timeout=900, allow_errors=False,
                                     resources={"metadata": {"path": str(tmp)}})
    client.execute()
    return nb, tmp


def outputs_of(nb, needle: str) -> list:
    cells = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    assert len(cells) == 1, needle
    return cells[0].outputs


def texts(outputs) -> list[str]:
    out = []
    for o in outputs:
        if o.output_type == "stream":
            out.append(o.text)
        elif "data" in o and "text/plain" in o.data:
            out.append(o.data["text/plain"])
    return out


def test_every_cell_ran_and_the_objects_show_themselves(executed):
    nb, _ = executed
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None
            assert not [o for o in cell.outputs if o.output_type == "error"]
    # the model: its Keras-style summary with the notebook's parameter count
    model_html = outputs_of(nb, "model = mlplab.build(")[-1].data["text/html"]
    assert "dense_1 (Dense)" in model_html and "669,706" in model_html
    # fit with verbose=1: one output per epoch (the live bar updated in place into the epoch's line)
    fit_out = outputs_of(nb, "history = mlplab.fit(")
    progress = [o for o in fit_out if o.output_type == "display_data"]
    assert len(progress) == EPOCHS
    for epoch, o in enumerate(progress, 1):
        line = o.data["text/plain"]
        assert line.startswith(f"Epoch {epoch}/{EPOCHS} - ") and "val_accuracy: " in line and "\n" not in line
    assert not [o for o in fit_out if o.output_type == "stream"]  # nothing printed beside the display
    history_html = fit_out[-1].data["text/html"]
    assert f"{EPOCHS} epochs" in history_html and 'src="data:image/png;base64,' in history_html
    # verbose=2 in the early-stopping cell: one line per epoch, at most EPOCHS of them
    es_lines = [t for t in texts(outputs_of(nb, "history_es = mlplab.fit(")) if t.startswith("Epoch ")]
    assert 2 <= len(es_lines) <= EPOCHS
    # plots: PNG images
    assert "image/png" in outputs_of(nb, "history.plot(")[-1].data
    assert "image/png" in outputs_of(nb, "mlplab.plot_embedding(")[-1].data
    metrics_html = outputs_of(nb, "metrics = mlplab.evaluate(")[-1].data["text/html"]
    assert "Ankle boot" in metrics_html and "confusion matrix" in metrics_html
    accuracy = float(re.search(r"accuracy <b>([0-9.]+)</b>", metrics_html).group(1))
    assert 0.5 < accuracy <= 1.0  # 3 epochs of SGD at lr 0.01 on 6,000 images (about 0.64): far above chance
    assert "same predictions: True" in "".join(texts(outputs_of(nb, "copy.set_weights(")))
    # the explorers: Bokeh documents with hover thumbnails; BokehJS inlined in the first one only
    first = outputs_of(nb, 'title="Last hidden layer, t-SNE"')[-1].data["text/html"]
    second = outputs_of(nb, 'title="First vs last hidden layer, t-SNE"')[-1].data["text/html"]
    assert "Bokeh=" in first.replace(" ", "") or "window.Bokeh" in first
    assert len(first) > 1_000_000 > len(second)  # BokehJS is about 1.8 MB: sent once per notebook
    for page in (first, second):
        assert "data:image/png;base64," in page and "Bokeh.embed.embed_item(" in page
        assert not EXTERNAL.search(page)


def test_executed_notebook_renders_in_chromium(executed):
    from test_report_browser import CHROMIUM, chromium, console_problems, page_requests

    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed")
    nb, tmp = executed
    from nbconvert import HTMLExporter

    exporter = HTMLExporter()
    exporter.exclude_input_prompt = exporter.exclude_output_prompt = False
    body, _ = exporter.from_notebook_node(nb)
    # nbconvert's page links require.js and MathJax from a CDN; this notebook needs neither, and the test
    # machine has no network, so those two tags are dropped (the notebook's own outputs are checked offline).
    body = re.sub(r'<script[^>]+src="https?://[^"]*"[^>]*>\s*</script>', "", body)
    page = tmp / "notebook.html"
    page.write_text(body, encoding="utf-8")

    shot = tmp / "notebook.png"
    proc, netlog = chromium(["--window-size=1100,2600", "--virtual-time-budget=8000", f"--screenshot={shot}",
                             page.resolve().as_uri()], tmp, "nb-shot")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_problems(proc.stderr) == []
    assert page_requests(netlog) == []
    if os.environ.get("MLPLAB_NOTEBOOK_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MLPLAB_NOTEBOOK_SCREENSHOT"])

    probe = tmp / "notebook.probe.html"
    head, _, tail = body.rpartition("</body>")  # the page's own closing tag (scripts may hold the string too)
    probe.write_text(head + PROBE + "</body>" + tail, encoding="utf-8")
    proc, netlog = chromium(["--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri()], tmp, "nb-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_problems(proc.stderr) == []
    assert page_requests(netlog) == []
    marker = re.search(r'<div id="mlplab-check"([^>]*)>', proc.stdout)
    assert marker, "the probe script did not run"
    found = dict(re.findall(r'data-([a-z-]+)="(-?\d+)"', marker.group(1)))
    # explorer 1: one panel; explorer 2: two panels -> 3 plots, each drawing on its own canvas(es)
    assert int(found["plots"]) == 3, found
    assert int(found["canvases"]) >= 3, found
    assert int(found["errors"]) == 0, found


# Counts Bokeh plot views and <canvas> elements, looking inside shadow roots (Bokeh 3 renders into them), and
# JavaScript errors raised after it was installed; writes them on a marker element for --dump-dom.
PROBE = """<script>
var mlplabErrors = 0; window.addEventListener('error', function () { mlplabErrors += 1; });
window.addEventListener('load', function () { setTimeout(function () {
  function walk(root, sel, acc) {
    root.querySelectorAll(sel).forEach(function (e) { acc.push(e); });
    root.querySelectorAll('*').forEach(function (e) { if (e.shadowRoot) walk(e.shadowRoot, sel, acc); });
    return acc;
  }
  var canvases = walk(document, 'canvas', []).filter(function (c) { return c.width > 0 && c.height > 0; });
  var plots = 0;
  if (window.Bokeh && Bokeh.documents) {
    Bokeh.documents.forEach(function (doc) {
      doc.all_models.forEach(function (m) { if (m.type === 'Figure' || (m.constructor && m.constructor.__name__ === 'Figure')) plots += 1; });
    });
  }
  var d = document.createElement('div'); d.id = 'mlplab-check';
  d.setAttribute('data-canvases', canvases.length); d.setAttribute('data-plots', plots);
  d.setAttribute('data-errors', mlplabErrors);
  document.body.appendChild(d);
}, 1500); });
</script>"""
