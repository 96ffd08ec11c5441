"""Interactive embedding explorer: one standalone, offline Bokeh page.

Pan and wheel-zoom, box and lasso selection, a legend whose entries hide a class in every panel, and a hover
card with the sample's thumbnail, true and predicted class, confidence and index. Several layers become
linked panels drawn from ONE ColumnDataSource: a selection lives on the source, so points picked in one
layer light up in all of them. WebGL keeps 10,000+ points smooth.

Offline by construction: BokehJS is inlined (bokeh.resources.INLINE) and a Content-Security-Policy meta tag
forbids every network fetch. BokehJS carries URL strings in license comments and in code paths this page
never runs (MathJax and Google Maps loaders); inside <script> we write "://" as ":\\/\\/", which JavaScript
and JSON read as the same string, so the file holds no literal external URL, only XML namespace names.
User strings (class names, titles) are html.escape'd wherever they reach HTML.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence

import numpy as np

from mlplab.viz.palette import MISTAKE_COLOR, class_colors
from mlplab.inspect.embed import method_title as title_of
from mlplab.viz.scatter import quality_line

# Namespace identifiers: compared as strings by the DOM, never fetched.
XML_NAMESPACES = (
    "http://www.w3.org/2000/svg",
    "http://www.w3.org/1999/xhtml",
    "http://www.w3.org/1998/Math/MathML",
    "http://www.w3.org/1999/xlink",
    "http://www.w3.org/2000/xmlns/",
    "http://www.w3.org/XML/1998/namespace",
)
# regl (Bokeh's WebGL layer) compiles shaders' JS with new Function, hence 'unsafe-eval'.
CSP = ("default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline' "
       "'unsafe-eval'; font-src data:")

_SCRIPT = re.compile(r"(<script\b[^>]*>)(.*?)(</script>)", re.DOTALL | re.IGNORECASE)
_URL = re.compile(r"\b(https?)://")


def _defang(script: str) -> str:
    def sub(m):
        start = m.start()
        if any(script.startswith(ns, start) for ns in XML_NAMESPACES):
            return m.group(0)
        return m.group(1) + r":\/\/"
    return _URL.sub(sub, script)


def make_offline(page: str) -> str:
    """Add the CSP meta tag and remove literal external URLs from inline scripts (see module docstring)."""
    page = _SCRIPT.sub(lambda m: m.group(1) + _defang(m.group(2)) + m.group(3), page)
    meta = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    return page.replace("<head>", "<head>\n" + meta, 1)


TOOLTIP_CSS = ("display:flex;gap:8px;align-items:center;font:12px/1.35 system-ui,sans-serif;"
               "color:#222;max-width:260px")


def _tooltip(with_thumbs: bool) -> str:
    img = ('<img src="@thumb{safe}" width="84" height="84" alt="" '
           'style="image-rendering:pixelated;border:1px solid #ddd;flex:none">') if with_thumbs else ""
    # Fields are pre-escaped with html.escape and marked {safe}, so a class name is shown, never interpreted.
    return (f'<div style="{TOOLTIP_CSS}">{img}<div>'
            '<b>@label{safe}</b><br>'
            'predicted: @pred{safe}<br>'
            'confidence: @conf{0.0%}<br>'
            '<span style="color:#777">#@index</span></div></div>')


def explorer_html(panels: Mapping[str, np.ndarray], labels, class_names: Sequence[str], *, predictions=None,
                  confidences=None, indices=None, thumbnails: Sequence[str] | None = None,
                  qualities: Mapping[str, Mapping] | None = None, seconds: Mapping[str, float] | None = None,
                  method: str = "", title: str = "Embedding explorer") -> str:
    """A complete HTML page exploring the 2-D maps in `panels` ({name: coords (N, 2)})."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, gridplot
    from bokeh.models import (BoxSelectTool, CDSView, ColumnDataSource, Div, HoverTool, IndexFilter,
                              LassoSelectTool, Legend, LegendItem, PanTool, ResetTool, WheelZoomTool)
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    names = [str(c) for c in class_names]
    n_classes = max(len(names), int(labels.max(initial=-1)) + 1)
    names += [str(i) for i in range(len(names), n_classes)]
    colors = class_colors(n_classes)
    safe_names = [html.escape(s) for s in names]
    preds = None if predictions is None else np.asarray(predictions, dtype=np.int64)
    data = {
        "label": [safe_names[i] for i in labels],
        "pred": [safe_names[i] for i in preds] if preds is not None else ["–"] * n,
        "conf": (np.asarray(confidences, dtype=np.float64) if confidences is not None else np.full(n, np.nan)),
        "index": np.asarray(indices if indices is not None else np.arange(n), dtype=np.int64),
        "thumb": list(thumbnails) if thumbnails is not None else [""] * n,
    }
    keys = {}
    for i, (name, coords) in enumerate(panels.items()):
        coords = np.asarray(coords, dtype=np.float64)
        keys[name] = (f"x{i}", f"y{i}")
        data[f"x{i}"], data[f"y{i}"] = coords[:, 0], coords[:, 1]
    source = ColumnDataSource(data)

    single = len(panels) == 1
    side = 640 if single else 420
    size = float(np.clip(60.0 / np.sqrt(max(n, 1)) * 4, 2.5, 8.0))
    with_thumbs = thumbnails is not None and any(thumbnails)
    class_views = [CDSView(filter=IndexFilter(np.flatnonzero(labels == c).tolist())) for c in range(n_classes)]
    wrong = None if preds is None else np.flatnonzero(preds != labels)
    method_title = title_of(method) if method else ""

    plots, per_class, mistake_renderers = [], [[] for _ in range(n_classes)], []
    for name, (xk, yk) in keys.items():
        # Bokeh titles and legend labels are drawn on the canvas as text, so they take the raw string.
        head = f"{name} · {method_title}" if method_title else str(name)
        sub = quality_line((qualities or {}).get(name), (seconds or {}).get(name))
        p = figure(width=side, height=side, title=head + (f"   {sub}" if sub else ""), output_backend="webgl",
                   tools=[PanTool(), WheelZoomTool(), BoxSelectTool(), LassoSelectTool(), ResetTool()],
                   match_aspect=True, toolbar_location="above")
        p.toolbar.active_scroll = p.select_one(WheelZoomTool)
        p.title.text_font_size = "12px"
        p.xaxis.visible = p.yaxis.visible = False
        p.xgrid.visible = p.ygrid.visible = False
        p.outline_line_color = "#e0e0e0"
        hover_targets = []
        for c in range(n_classes):
            if not len(class_views[c].filter.indices):
                continue
            r = p.scatter(xk, yk, source=source, view=class_views[c], size=size, fill_color=colors[c],
                          line_color=None, fill_alpha=0.8, nonselection_fill_alpha=0.08,
                          selection_fill_alpha=1.0, selection_fill_color=colors[c])
            per_class[c].append(r)
            hover_targets.append(r)
        if wrong is not None and len(wrong):
            r = p.scatter(xk, yk, source=source, view=CDSView(filter=IndexFilter(wrong.tolist())),
                          size=size + 3, fill_color=None, line_color=MISTAKE_COLOR, line_width=0.8,
                          line_alpha=0.7, nonselection_line_alpha=0.1, selection_line_alpha=0.9)
            mistake_renderers.append(r)
        p.add_tools(HoverTool(renderers=hover_targets, tooltips=_tooltip(with_thumbs)))
        plots.append(p)

    # One legend for all panels: an item lists the class's renderer in every panel, so a click hides the
    # class everywhere at once.
    items = [LegendItem(label=names[c], renderers=per_class[c]) for c in range(n_classes) if per_class[c]]
    if mistake_renderers:
        items.append(LegendItem(label=f"misclassified ({len(wrong)})", renderers=mistake_renderers))
    legend = Legend(items=items, click_policy="hide", location="top_left", border_line_color=None,
                    label_text_font_size="12px", glyph_width=14)
    plots[-1].add_layout(legend, "right")
    plots[-1].width += 150  # room for the legend beside the last panel

    intro = Div(text=(f"<h2 style='margin:0 0 4px;font:600 17px system-ui,sans-serif'>{html.escape(title)}</h2>"
                      f"<p style='margin:0;color:#555;font:13px system-ui,sans-serif'>{n} points. Hover for the "
                      "sample; drag to pan, scroll to zoom; box or lasso select to pick points in every panel; "
                      "click a legend entry to hide that class.</p>"))
    cols = len(plots) if len(plots) <= 4 else 3
    grid = gridplot(plots, ncols=cols, toolbar_location="above", merge_tools=True)
    page = file_html(column(intro, grid), resources=INLINE, title=title)
    # the page's own height, so a report can size the frame it sits in without a gap or a scroll bar
    rows = -(-len(plots) // cols)
    height = 110 + rows * (side + 10)
    page = page.replace("<head>", f'<head>\n<meta name="mlplab-height" content="{height}">', 1)
    return make_offline(page)
