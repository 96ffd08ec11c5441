"""Interactive embedding explorer: one standalone, offline Bokeh page.

Pan and wheel-zoom, box and lasso selection, a legend whose entries hide a class in every panel, and a hover
card with the sample's thumbnail, true and predicted class, confidence and index. Several layers become
linked panels drawn from ONE ColumnDataSource: a selection lives on the source, so points picked in one
layer light up in all of them. WebGL keeps 10,000+ points smooth.

The page comes from templates/explorer.html (viz/pages.py: the shared skeleton and CSP, BokehJS inlined). The
Bokeh document sits in the page as JSON (explorer_doc), so a run report can draw several explorers with one
copy of BokehJS (read_explorer). User strings (class names, titles) are escaped wherever they reach HTML.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
from markupsafe import Markup

from mlplab.inspect.embed import method_title as title_of
from mlplab.viz.pages import XML_NAMESPACES, bokeh_bundle, render, script_json
from mlplab.viz.palette import MISTAKE_COLOR, class_colors
from mlplab.viz.scatter import quality_line

__all__ = ["XML_NAMESPACES", "ExplorerDoc", "explorer_doc", "explorer_html", "read_explorer", "share_lists",
           "EXPLORER_CSS"]

PAYLOAD_FORMAT = "mlplab-explorer/1"
INTRO_HEIGHT = 70  # the title and the one-line help above the plots (px)

EXPLORER_CSS = (".explorer-title{margin:0 0 4px;font:600 17px system-ui,sans-serif}"
                ".explorer-intro{margin:0 0 6px;color:#555;font:13px system-ui,sans-serif}")
_PAGE_CSS = "body{margin:8px;background:#fff;color:#222}" + EXPLORER_CSS


@dataclass
class ExplorerDoc:
    """One explorer as values: its Bokeh document (bokeh.embed.json_item) and what is shown around it."""

    title: str
    n: int                 # points
    height: int            # the whole page's height in px (title, help line and plots)
    item: dict             # the Bokeh document, as bokeh.embed.json_item returns it
    bokeh: str             # the Bokeh version that wrote it: BokehJS of another version may not read it

    @property
    def plot_height(self) -> int:
        return max(self.height - INTRO_HEIGHT, 0)

    @property
    def payload(self) -> Markup:
        return self.payload_with(self.item)

    def payload_with(self, item) -> Markup:
        """The JSON element's content, with `item` (this document, or a version of it with shared lists)."""
        return script_json({"format": PAYLOAD_FORMAT, "bokeh": self.bokeh, "title": self.title, "n": self.n,
                            "height": self.height, "item": item})


SHARE_MIN = 64  # string lists at least this long are stored once per report (share_lists)


def share_lists(items: Sequence[dict]) -> tuple[list[dict], dict[str, list]]:
    """The items with every long list of strings replaced by {"mlplab_shared": key}, and {key: list}.

    Several maps of one run usually show the same samples, so their thumbnails (the bulk of a document) and
    labels are identical: a report stores each such list once, and its draw script puts them back.
    """
    shared: dict[str, list] = {}

    def walk(node):
        if isinstance(node, list):
            if len(node) >= SHARE_MIN and all(isinstance(v, str) for v in node):
                key = hashlib.sha256("\0".join(node).encode("utf-8")).hexdigest()[:16]
                shared.setdefault(key, node)
                return {"mlplab_shared": key}
            return [walk(v) for v in node]
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return node

    return [walk(item) for item in items], shared


_PAYLOAD = re.compile(r'<script type="application/json" class="mlplab-explorer"[^>]*>(.*?)</script>', re.DOTALL)


def read_explorer(page: str) -> ExplorerDoc | None:
    """The explorer in a page that explorer_html wrote, if the installed BokehJS can draw it; else None.

    None for pages of other origin, of an older layout, or of another Bokeh version: those are shown as they are
    (their own, complete page) rather than re-drawn.
    """
    found = _PAYLOAD.findall(page)
    if len(found) != 1:
        return None
    try:
        data = json.loads(found[0])
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("format") != PAYLOAD_FORMAT or data.get("bokeh") != version("bokeh"):
        return None
    try:
        return ExplorerDoc(title=str(data["title"]), n=int(data["n"]), height=int(data["height"]),
                           item=dict(data["item"]), bokeh=str(data["bokeh"]))
    except (KeyError, TypeError, ValueError):
        return None


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


def explorer_html(panels: Mapping[str, np.ndarray], labels, class_names: Sequence[str], **kwargs) -> str:
    """A complete, self-contained HTML page exploring the 2-D maps in `panels` ({name: coords (N, 2)}).

    Keywords as for explorer_doc."""
    doc = explorer_doc(panels, labels, class_names, **kwargs)
    return render("explorer.html", ex=doc, css=Markup(_PAGE_CSS), bokeh_js=bokeh_bundle())


def explorer_doc(panels: Mapping[str, np.ndarray], labels, class_names: Sequence[str], *, predictions=None,
                 confidences=None, indices=None, thumbnails: Sequence[str] | None = None,
                 qualities: Mapping[str, Mapping] | None = None, seconds: Mapping[str, float] | None = None,
                 method: str = "", title: str = "Embedding explorer") -> ExplorerDoc:
    """The explorer of the 2-D maps in `panels` as a Bokeh document (linked panels, legend, hover cards)."""
    from bokeh.embed import json_item
    from bokeh.layouts import gridplot
    from bokeh.models import (BoxSelectTool, CDSView, ColumnDataSource, HoverTool, IndexFilter,
                              LassoSelectTool, Legend, LegendItem, PanTool, ResetTool, WheelZoomTool)
    from bokeh.plotting import figure

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

    cols = len(plots) if len(plots) <= 4 else 3
    grid = gridplot(plots, ncols=cols, toolbar_location="above", merge_tools=True)
    # the page's own height, so a report can size the space it gives the explorer without a gap or a scroll bar
    rows = -(-len(plots) // cols)
    height = 110 + rows * (side + 10)
    return ExplorerDoc(title=str(title), n=n, height=height, item=json.loads(json.dumps(json_item(grid))),
                       bokeh=version("bokeh"))
