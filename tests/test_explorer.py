"""The interactive explorer page (offline, escaped, a thumbnail per point, draws in Chromium) and the PNG."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from sklearn.datasets import load_digits

from mlplab.viz.explorer import XML_NAMESPACES, explorer_html
from mlplab.viz.figures import figure_bytes
from mlplab.viz.scatter import embedding_figure
from mlplab.viz.thumbnails import thumbnail_uris

EVIL = '</script><script>alert("x")</script><img src=x onerror=alert(1)> & co'
URL = re.compile(r"https?://[^\s\"'<>\\)]*", re.IGNORECASE)


@pytest.fixture(scope="module")
def page_parts():
    d = load_digits()
    n = 300
    rng = np.random.default_rng(0)
    y = d.target[:n]
    preds = y.copy()
    preds[::17] = (preds[::17] + 1) % 10
    names = [str(i) for i in range(10)]
    names[3] = EVIL
    panels = {"input": rng.normal(size=(n, 2)), "dense_2": rng.normal(size=(n, 2))}
    thumbs = thumbnail_uris(d.images[:n])
    page = explorer_html(panels, y, names, predictions=preds, confidences=rng.random(n),
                         indices=np.arange(1000, 1000 + n), thumbnails=thumbs,
                         qualities={"input": {"knn_accuracy": 0.5, "trustworthiness": 0.9}}, method="tsne",
                         title=f"run {EVIL}")
    return page, thumbs, n, y, preds, names, panels


def test_no_external_url_anywhere(page_parts):
    page = page_parts[0]
    found = set(URL.findall(page))
    assert found <= set(XML_NAMESPACES), found - set(XML_NAMESPACES)
    assert 'http-equiv="Content-Security-Policy"' in page and "default-src 'none'" in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']?(https?:)?//", page)


def test_a_thumbnail_for_every_point(page_parts):
    page, thumbs, n, *_ = page_parts
    assert len(thumbs) == n and len(set(thumbs)) > n * 0.9
    assert all(t.startswith("data:image/png;base64,") for t in thumbs)
    for t in thumbs:  # each point's own picture is embedded in the page
        assert t in page


def test_user_strings_are_escaped(page_parts):
    page = page_parts[0]
    assert EVIL not in page
    assert "<script>alert" not in page and "<img src=x" not in page  # only ever present as escaped text
    assert "<title>run &lt;/script&gt;&lt;script&gt;alert(" in page  # the page title, escaped once


def test_thumbnails_of_tabular_rows_are_empty():
    assert thumbnail_uris(np.zeros((3, 7))) == ["", "", ""]
    assert all(u.startswith("data:image/png") for u in thumbnail_uris(np.random.default_rng(0).random((2, 16))))


def test_png_scatter_has_panels_legend_and_mistakes(page_parts):
    _, _, n, y, preds, names, panels = page_parts
    fig = embedding_figure(panels, y, names, predictions=preds, method="tsne",
                           qualities={"input": {"knn_accuracy": 0.5, "trustworthiness": 0.9}}, title="t")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title(loc="left") for ax in axes] == ["input · t-SNE", "dense_2 · t-SNE"]
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in axes)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[:10] == names and texts[10] == f"misclassified ({int((preds != y).sum())})"
    assert "10-NN acc 0.500 · trust 0.900" in [t.get_text() for t in axes[0].texts]
    png = figure_bytes(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_page_draws_in_chromium_without_errors(page_parts, tmp_path):
    path = tmp_path / "explorer.html"
    path.write_text(page_parts[0], encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=8000", "--window-size=1200,900", "--dump-dom", path.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln]
    problems = [ln for ln in console if re.search(r"Uncaught|Error|Refused|Content Security Policy", ln)
                and "GL Driver" not in ln]
    assert not problems, problems
    assert any("document idle" in ln for ln in console), console  # BokehJS finished rendering
    # BokehJS renders into shadow roots that --dump-dom does not show; its "document idle" log line (above)
    # is what says every view was built and drawn. The live DOM shows the grid's element inside our root.
    assert re.search(r'<div class="bokeh-root" id="mlplab-explorer"[^>]*><div class="bk-GridPlot">', proc.stdout)


def test_page_states_its_height_and_the_report_frame_uses_it(page_parts):
    """Two panels side by side: a short page. The report reserves that height for the explorer it draws inline
    (no empty band below), and a page it frames instead (another Bokeh version) gets a frame of that height."""
    from importlib.metadata import version

    from mlplab.viz.explorer import INTRO_HEIGHT
    from mlplab.viz.report import Explorer, _embeddings_section

    page = page_parts[0]
    two = int(re.search(r'<meta name="mlplab-height" content="(\d+)">', page).group(1))
    d = load_digits()
    single = explorer_html({"dense_2": np.random.default_rng(1).normal(size=(50, 2))}, d.target[:50],
                           [str(i) for i in range(10)], method="tsne", title="one")
    one = int(re.search(r'<meta name="mlplab-height" content="(\d+)">', single).group(1))
    assert (two, one) == (540, 760)  # one row of 420 px panels; one 640 px panel
    section, shared = _embeddings_section([Explorer("x", html=page)])
    assert shared is not None and f'style="min-height:{two - INTRO_HEIGHT}px"' in section and "<iframe" not in section
    older = page.replace(f'"bokeh":"{version("bokeh")}"', '"bokeh":"0.0.1"')
    assert older != page
    section, shared = _embeddings_section([Explorer("x", html=older)])
    assert shared is None and 'style="height:540px"' in section and section.count("<iframe") == 1


@pytest.mark.parametrize("shape", [(28, 28), (8, 8), (1, 1), (5, 64), (3, 17)])
def test_thumbnails_decode_to_the_inverted_image(shape):
    """The directly written PNGs decode (PIL, a strict reader) to exactly the dark-ink-on-white pixels."""
    import base64
    import io

    from PIL import Image

    images = np.random.default_rng(sum(shape)).integers(0, 256, (4, *shape), dtype=np.uint8)
    for tile, uri in zip(images, thumbnail_uris(images)):
        png = base64.b64decode(uri.removeprefix("data:image/png;base64,"))
        decoded = Image.open(io.BytesIO(png))
        decoded.load()  # verifies the CRCs and the zlib stream
        assert decoded.mode == "L" and decoded.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(decoded), 255 - tile)


def test_large_images_are_downsampled_for_thumbnails():
    import base64
    import io

    from PIL import Image

    uri = thumbnail_uris(np.zeros((1, 200, 100), dtype=np.uint8))[0]
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.removeprefix("data:image/png;base64,"))))
    assert max(decoded.size) == 64 and decoded.size == (32, 64)
