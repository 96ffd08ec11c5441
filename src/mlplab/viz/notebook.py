"""Inline display in Jupyter: HTML for History, Metrics and the model, plot_history, and explore().

Everything here returns strings or objects; nothing is shown until IPython asks (`_repr_html_` or the
formatters the package facade registers by type name, see mlplab/__init__.py). Every user string is
html.escape'd, pictures are inline PNG data: URIs, and BokehJS is inlined from the installed bokeh, once per
kernel, with its URL strings defanged as in the explorer page: nothing in the output points off the machine.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np

from mlplab.errors import MlplabError
from mlplab.viz.explorer import EXPLORER_CSS, explorer_doc
from mlplab.viz.figures import png_data_uri

CARD_STYLE = "font:13px/1.45 system-ui,sans-serif;color:#222;max-width:980px"
TABLE_STYLE = "border-collapse:collapse;font:12px/1.4 system-ui,sans-serif;margin:6px 0"
CELL = "padding:2px 8px;border-bottom:1px solid #e5e5e5"


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, digits: int = 4) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return esc(value)
    return "–" if math.isnan(v) else f"{v:.{digits}f}"


def html_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f'<th style="{CELL};text-align:left">{esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f'<td style="{CELL}">{esc(c)}</td>' for c in row) + "</tr>" for row in rows)
    return f'<table style="{TABLE_STYLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# --- learning curves ----------------------------------------------------------------------------------------
def plot_history(history, *, title: str | None = None, monitor: str = "val_loss"):
    """Learning curves (loss and accuracy, train vs validation) of a History, its rows, or a Run's history:
    a matplotlib Figure (Keras notebook's plot_history)."""
    from mlplab.viz.curves import learning_curves

    rows = _history_rows(history)
    if not rows:
        raise MlplabError("plot_history needs a history with at least one epoch (train the model first)")
    return learning_curves(rows, title=title, monitor=monitor,
                           stopped_epoch=getattr(history, "stopped_early_at", None),
                           restored_epoch=getattr(history, "restored_epoch", None))


def _history_rows(history) -> list[dict]:
    rows = getattr(history, "rows", history)
    if callable(rows):  # a Run: .history() reads history.csv
        rows = rows()
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, Mapping) for r in rows):
        raise MlplabError("plot_history takes a History, a list of history rows (dicts) or a run; "
                          f"got {type(history).__name__}")
    return list(rows)


def history_html(history) -> str:
    """A History inline: the curves as a PNG and the last and best epochs in numbers."""
    rows = _history_rows(history)
    if not rows:
        return f'<div style="{CARD_STYLE}"><b>History</b>: no epochs yet</div>'
    from mlplab.viz.figures import figure_bytes

    png = figure_bytes(plot_history(history), "png", dpi=80)
    last = rows[-1]
    has_val = not math.isnan(float(last.get("val_loss", math.nan)))
    monitor = "val_loss" if has_val else "loss"
    best = min(rows, key=lambda r: float(r[monitor]) if not math.isnan(float(r[monitor])) else math.inf)
    cols = ["epoch", "loss", "accuracy"] + (["val_loss", "val_accuracy"] if has_val else [])
    table = html_table(["", *cols], [["last", *[_fmt(last, c) for c in cols]],
                                     [f"best ({monitor})", *[_fmt(best, c) for c in cols]]])
    notes = []
    if getattr(history, "stopped_early_at", None):
        notes.append(f"stopped early at epoch {history.stopped_early_at}")
    if getattr(history, "restored_epoch", None):
        notes.append(f"weights restored from epoch {history.restored_epoch}")
    if getattr(history, "interrupted", False):
        notes.append("interrupted")
    note = f" · {esc(', '.join(notes))}" if notes else ""
    return (f'<div style="{CARD_STYLE}"><b>History</b>: {len(rows)} epochs{note}'
            f'<br><img alt="learning curves" style="max-width:100%" src="{png_data_uri(png)}">{table}</div>')


def _fmt(row: Mapping, col: str) -> str:
    return str(int(row[col])) if col == "epoch" else _num(row.get(col, math.nan))


# --- test metrics -------------------------------------------------------------------------------------------
def metrics_html(metrics: Mapping) -> str:
    """Test metrics inline: headline numbers, a per-class table and the confusion matrix as a PNG."""
    from mlplab.viz.confusion import confusion_figure

    names = list(metrics.get("class_names") or [])
    head = (f"<b>Test metrics</b> ({esc(metrics.get('n_test', '?'))} samples): accuracy "
            f"<b>{_num(metrics.get('test_accuracy'))}</b> · loss {_num(metrics.get('test_loss'))} · macro F1 "
            f"{_num(metrics.get('macro_f1'))}")
    rows = [[c["class"], _num(c["precision"], 3), _num(c["recall"], 3), _num(c["f1"], 3), c["support"]]
            for c in metrics.get("per_class", [])]
    table = html_table(["class", "precision", "recall", "F1", "support"], rows)
    picture = ""
    if metrics.get("confusion_matrix"):
        fig = confusion_figure(np.asarray(metrics["confusion_matrix"]), names or None, title="Confusion matrix")
        picture = f'<img alt="confusion matrix" style="max-width:520px" src="{png_data_uri(fig, dpi=72)}">'
    return (f'<div style="{CARD_STYLE}">{head}<div style="display:flex;gap:18px;align-items:flex-start;'
            f'flex-wrap:wrap"><div>{table}</div><div>{picture}</div></div></div>')


# --- the model ----------------------------------------------------------------------------------------------
def model_html(model) -> str:
    """The model inline: the Keras-style summary text."""
    from mlplab.model.summary import summary

    return (f'<div style="{CARD_STYLE}"><b>MLP</b> <code>{esc(model.spec)}</code>'
            f'<pre style="font:12px/1.3 ui-monospace,Menlo,Consolas,monospace">{esc(summary(model))}</pre></div>')


# --- the interactive explorer -------------------------------------------------------------------------------
_bokehjs_sent = False  # per kernel: a notebook loads BokehJS once, with the first explorer shown


def bokehjs_script() -> str:
    """A <script> tag with the installed BokehJS inlined (no CDN), URL strings defanged (viz/pages.py)."""
    from mlplab.viz.pages import bokeh_bundle

    return f'<script type="text/javascript">{bokeh_bundle()}</script>'


class ExplorerView:
    """An interactive Bokeh explorer shown inline (hover thumbnails, linked panels, legend that hides classes).

    `html()` is a fragment for a notebook output; `page()` the standalone offline page the report uses.
    """

    def __init__(self, panels: Mapping[str, np.ndarray], labels, class_names: Sequence[str], **options):
        self.panels, self.labels, self.class_names, self.options = panels, labels, list(class_names), options

    def html(self, *, with_bokehjs: bool = True) -> str:
        import uuid

        from mlplab.viz.pages import script_json

        doc = explorer_doc(self.panels, self.labels, self.class_names, **self.options)
        target = f"mlplab-explorer-{uuid.uuid4().hex}"  # unique per output: a notebook shows many explorers
        # Draws this output's document only (the report's draw script walks every explorer of its page).
        draw = (f'<script type="text/javascript">(function(){{var item = {script_json(doc.item)};'
                f'Bokeh.embed.embed_item(item, "{target}");}})();</script>')
        return ((bokehjs_script() if with_bokehjs else "") + f"<style>{EXPLORER_CSS}</style>"
                f'<h2 class="explorer-title">{esc(doc.title)}</h2>'
                f'<p class="explorer-intro">{doc.n} points. Hover for the sample; drag to pan, scroll to zoom; '
                f'box or lasso select to pick points in every panel; click a legend entry to hide that class.</p>'
                f'<div id="{target}" style="min-height:{doc.plot_height}px"></div>' + draw)

    def page(self) -> str:
        from mlplab.viz.explorer import explorer_html

        return explorer_html(self.panels, self.labels, self.class_names, **self.options)

    def _repr_html_(self) -> str:
        global _bokehjs_sent
        out = self.html(with_bokehjs=not _bokehjs_sent)
        _bokehjs_sent = True
        return out

    def __repr__(self) -> str:
        return (f"<explorer: {len(self.labels)} points, panels {', '.join(map(str, self.panels))}; "
                f"shown interactively in a notebook>")


def explore(embeddings, labels, class_names: Sequence[str] | None = None, *, images=None, probabilities=None,
            predictions=None, indices=None, method: str | None = None,
            title: str = "Embedding explorer") -> ExplorerView:
    """The interactive Bokeh explorer of 2-D maps, inline in a notebook.

    `embeddings`: one map or {panel name: map}, each an Embedding (from mlplab.embed) or (N, 2) coordinates.
    `images` (N, H, W) give hover thumbnails; `probabilities` (N, classes) give predictions and confidence.
    """
    panels = embeddings if isinstance(embeddings, Mapping) else {"map": embeddings}
    if not panels:
        raise MlplabError("explore needs at least one embedding")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise MlplabError("explore: labels must be a vector of class indices (integers >= 0)")
    coords, methods, qualities, seconds = {}, set(), {}, {}
    for name, emb in panels.items():
        xy = np.asarray(getattr(emb, "coords", emb), dtype=np.float64)
        if xy.shape != (len(labels), 2):
            raise MlplabError(f"explore: embedding {name!r} must have shape ({len(labels)}, 2) to match the "
                              f"labels; got {xy.shape}")
        coords[str(name)] = xy
        if hasattr(emb, "method"):
            methods.add(emb.method)
            seconds[str(name)] = emb.seconds
    n_classes = int(labels.max(initial=-1)) + 1
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n_classes)]
    conf = None
    if probabilities is not None:
        proba = np.asarray(probabilities, dtype=np.float64)
        if proba.shape[0] != len(labels) or proba.ndim != 2:
            raise MlplabError(f"explore: probabilities must have shape ({len(labels)}, classes); got {proba.shape}")
        predictions = proba.argmax(axis=1) if predictions is None else predictions
        conf = proba.max(axis=1)
    thumbs = None
    if images is not None:
        if len(images) != len(labels):
            raise MlplabError(f"explore: {len(images)} images for {len(labels)} labels; give one image per point")
        from mlplab.viz.thumbnails import thumbnail_uris

        thumbs = thumbnail_uris(np.asarray(images))
    method = method if method is not None else (methods.pop() if len(methods) == 1 else "")
    return ExplorerView(coords, labels, names, predictions=predictions, confidences=conf, indices=indices,
                        thumbnails=thumbs, seconds=seconds or None, method=method, title=title)


def plot_embedding(embeddings, labels, class_names: Sequence[str] | None = None, *, predictions=None,
                   title: str | None = None):
    """The static scatter (matplotlib Figure) of one map or {panel name: map}, coloured by class."""
    from mlplab.viz.scatter import embedding_figure

    view = explore(embeddings, labels, class_names, predictions=predictions)
    return embedding_figure(view.panels, view.labels, view.class_names, predictions=view.options["predictions"],
                            method=view.options["method"], title=title)
