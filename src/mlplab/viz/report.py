"""The run report: one self-contained HTML file built from plain values (templates/report.html).

Everything is inline (PNG figures as data: URIs, CSS in a <style>, BokehJS once for all the embedding
explorers), so the file can be mailed, archived or opened offline; the Content-Security-Policy of viz/pages.py
forbids any network request. Markup is Markup (markupsafe): every other string that reaches the page, from the
user or the run (names, paths, config values, class names, the spec), is escaped where it is inserted, by the
template or by the helpers here (table() escapes its cells).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from markupsafe import Markup

from mlplab.viz.curves import history_summary
from mlplab.viz.explorer import EXPLORER_CSS, read_explorer, share_lists
from mlplab.viz.figures import compact_png, png_data_uri
from mlplab.viz.pages import CSP, bokeh_bundle, environment, esc, render, script_json

__all__ = ["CSP", "CSS", "SECTIONS", "Explorer", "build_report", "esc", "fmt_loss", "fmt_num", "fmt_pct", "img",
           "is_self_contained", "table", "validation_source"]

SECTIONS = [
    ("overview", "Overview"),
    ("data", "Data"),
    ("model", "Model"),
    ("curves", "Learning curves"),
    ("metrics", "Test metrics"),
    ("mistakes", "Mistakes"),
    ("embeddings", "Hidden features"),
    ("config", "Configuration"),
    ("environment", "Environment"),
]

_EXTERNAL_RESOURCE = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""",
                                re.IGNORECASE)


@dataclass
class Explorer:
    """One embedding explorer: the interactive Bokeh page and/or its static PNG."""

    title: str                 # e.g. "dense_3 · t-SNE"
    html: str | None = None    # a complete, self-contained HTML page: drawn inline when viz/explorer.py wrote it
                               # (one BokehJS for the whole report), else shown as it is in a srcdoc iframe
    png: bytes | None = None   # static picture, shown when there is no usable page
    note: str | None = None    # e.g. quality metrics "kNN accuracy 0.91, trustworthiness 0.95"


# explorer pages state their height (viz/explorer.py); other pages get the stylesheet's default frame height
_PAGE_HEIGHT = re.compile(r'<meta name="mlplab-height" content="(\d{1,5})">')


def is_self_contained(page: str) -> bool:
    """True when a page loads no script, stylesheet, image or frame from the network."""
    return _EXTERNAL_RESOURCE.search(page) is None


def validation_source(config: dict) -> str:
    """Where validation numbers came from: "test" (leaks), "split" (held out from train) or "none"."""
    data = config.get("data", {}) if isinstance(config, dict) else {}
    train = config.get("train", {}) if isinstance(config, dict) else {}
    for section in (data, train):
        for key in ("validation", "validation_data", "val_source"):
            if str(section.get(key, "")).lower() == "test":
                return "test"
    try:
        return "split" if float(data.get("val_split") or 0) > 0 else "none"
    except (TypeError, ValueError):
        return "none"


# --- small formatting helpers ----------------------------------------------------------------------------

def fmt_num(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def fmt_loss(value) -> str:
    """Losses with four decimals, so columns of them line up and compare at a glance."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.4f}"


def fmt_pct(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.2%}"


def fmt_value(value) -> str:
    """A config/manifest value as text: numbers compactly, lists and dicts as compact JSON."""
    if isinstance(value, (list, tuple)):
        # Shapes read as Keras prints them: [None, 64], not JSON's [null, 64]; strings keep their quotes.
        return "[" + ", ".join(json.dumps(v, ensure_ascii=False) if isinstance(v, str) else fmt_value(v)
                               for v in value) + "]"
    if value is None:
        return "None"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt_num(value, 6) if isinstance(value, float) else str(value)
    return fmt_num(value)


def flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    """Nested dicts to (dotted.key, leaf) rows; lists stay leaves."""
    rows = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                rows += flatten(value, path)
            else:
                rows.append((path, value))
    return rows


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "", numeric: Sequence[int] = ()) -> Markup:
    """An HTML table in a horizontal scroller. Headers and cells are text and get escaped; pass Markup for a cell
    that holds markup (a link, a bar)."""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{esc(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return Markup(f'<div class="scroll"><table class="{esc(cls)}"><thead><tr>{head}</tr></thead>'
                  f'<tbody>{body}</tbody></table></div>')


def kv_table(rows: Iterable[tuple[str, object]]) -> Markup:
    return table(["key", "value"], ([Markup(f"<code>{esc(k)}</code>"), fmt_value(v)] for k, v in rows), cls="kv")


def img(png: bytes | None, alt: str, *, caption: str | None = None, width: int | None = None) -> Markup:
    """An inline PNG; `width` caps its CSS width (px) for pictures that look oversized at full column width."""
    if not png:
        return Markup("")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    style = f' style="max-width:min(100%,{int(width)}px)"' if width else ""
    # the page inlines a palette copy (compact_png); the full-colour PNG stays in RUN/plots and RUN/embeddings
    return Markup(f'<figure><img src="{png_data_uri(compact_png(png))}" alt="{esc(alt)}"{style}>{cap}</figure>')


def muted(text: str) -> Markup:
    return Markup(f'<p class="muted">{esc(text)}</p>')


def stat(label: str, value: str, sub: str | None = None) -> str:
    sub_html = f"<span class=sub>{esc(sub)}</span>" if sub else ""
    return f'<div class="stat"><span class="label">{esc(label)}</span><span class="value">{esc(value)}</span>{sub_html}</div>'


# --- sections --------------------------------------------------------------------------------------------

def _overview(title, run_path, config, history, metrics, notes, manifest) -> str:
    data = config.get("data", {})
    model = config.get("model", {})
    train = config.get("train", {})
    best = history_summary(history) if history else None
    stats = []
    if metrics:
        stats.append(stat("test accuracy", fmt_pct(metrics.get("test_accuracy")),
                          f"{fmt_num(metrics.get('n_test'))} samples" if metrics.get("n_test") else None))
        stats.append(stat("test loss", fmt_loss(metrics.get("test_loss"))))
        if metrics.get("macro_f1") is not None:
            stats.append(stat("macro F1", fmt_num(metrics.get("macro_f1"), 3)))
    if best and best["best_epoch"] is not None and best["monitor"] == "val_loss":
        stats.append(stat("best val loss", fmt_loss(best["best_val_loss"]), f"epoch {best['best_epoch']}"))
        stats.append(stat("best-epoch val acc", fmt_pct(best["best_val_accuracy"])))
    if history:
        stats.append(stat("epochs", str(len(history)), f"{best['seconds']:.1f} s" if best and best["seconds"] else None))
    facts = [
        ("data", data.get("name")),
        ("model", model.get("spec")),
        ("optimizer", _optimizer_text(train)),
        ("batch size", train.get("batch_size")),
        ("precision", train.get("precision", "fp32")),  # runs from before precision existed trained in fp32
        ("seed", train.get("seed")),
        ("device", (manifest or {}).get("device") or train.get("device")),
        ("run folder", str(run_path) if run_path else None),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd><code>{esc(fmt_value(v))}</code></dd>" for k, v in facts if v not in (None, ""))
    source = validation_source(config)
    callouts = []
    if source == "test":
        callouts.append(
            '<div class="callout warn" role="note"><strong>Validation used the test set.</strong> '
            "Choosing the epoch (or stopping early) by test-set numbers leaks the test set into training "
            "decisions, so the test metrics below are optimistic. Hold out a validation split instead.</div>")
    elif source == "split":
        frac = data.get("val_split")
        callouts.append(
            '<div class="callout info" role="note">Validation used a seeded '
            f"{esc(fmt_pct(frac).replace('.00', ''))} hold-out of the training data; the test set was used only for the "
            "final metrics. (The original notebook validated on the test set, which leaks it into model "
            "selection.)</div>")
    else:
        callouts.append('<div class="callout info" role="note">No validation split: the curves show training '
                        "numbers only and the best epoch is picked by training loss.</div>")
    callouts += [f'<div class="callout info" role="note">{esc(n)}</div>' for n in notes]
    return Markup((f'<div class="stats">{"".join(stats)}</div>' if stats else "") + f"<dl class=facts>{dl}</dl>"
                  + "".join(callouts))


def _optimizer_text(train: dict) -> str | None:
    if not train.get("optimizer"):
        return None
    parts = [str(train["optimizer"])]
    if train.get("lr") is not None:
        parts.append(f"lr {fmt_num(train['lr'])}")
    if train.get("momentum"):
        parts.append(f"momentum {fmt_num(train['momentum'])}" + (" nesterov" if train.get("nesterov") else ""))
    if train.get("schedule") and train.get("schedule") != "constant":
        parts.append(f"schedule {train['schedule']}")
    return ", ".join(parts)


def _data_section(config, samples_png) -> str:
    data = config.get("data", {})
    rows = [(k, data.get(k)) for k in ("name", "source", "input_shape", "input_dim", "n_classes", "val_split") if k in data]
    names = data.get("class_names")
    out = str(kv_table(rows) if rows else muted("No data description in config.json."))
    if names:
        # the index is worth showing only when the name is not the index itself (digits, MNIST)
        chips = "".join(f"<li>{'' if str(n) == str(i) else f'<span class=idx>{i}</span> '}{esc(n)}</li>"
                        for i, n in enumerate(names))
        out += f'<h3>Classes</h3><ul class="chips">{chips}</ul>'
    out += str(img(samples_png, "random samples per class", caption="Random test samples, one row per class.",
                   width=640))
    return Markup(out)


def _model_section(summary_text, layer_configs) -> str:
    out = ""
    if summary_text:
        out += f'<h3>Summary</h3><div class="scroll"><pre class="summary">{esc(summary_text.rstrip())}</pre></div>'
    if layer_configs:
        keys: list[str] = []
        for cfg in layer_configs:
            keys += [k for k in cfg if k not in keys]
        rows = ([fmt_value(cfg.get(k)) if cfg.get(k) is not None else "–" for k in keys] for cfg in layer_configs)
        out += f'<h3>Layer configs</h3>{table(keys, rows, cls="layers")}'
    return Markup(out) if out else muted("No model summary available.")


def _curves_section(history, curves_png) -> str:
    if not history:
        return muted("No training history (history.csv is missing or empty).")
    out = str(img(curves_png, "learning curves: loss and accuracy per epoch, train and validation",
                  caption="Circle: best epoch by validation loss. Dashed line: early stop."))
    cols = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    rows = []
    for r in history:
        rows.append([
            r.get("epoch"), fmt_loss(r.get("loss")), fmt_pct(r.get("accuracy")),
            fmt_loss(r.get("val_loss")), fmt_pct(r.get("val_accuracy")), fmt_num(r.get("lr")),
            fmt_num(r.get("seconds"), 3),
        ])
    out += (f"<details><summary>History table ({len(history)} epochs)</summary>"
            f"{table(cols, rows, cls='history', numeric=range(len(cols)))}</details>")
    return Markup(out)


def _metrics_section(metrics, confusion_png) -> str:
    if not metrics:
        return muted("No test metrics yet (run `mlplab evaluate RUN`).")
    out = ""
    per_class = metrics.get("per_class") or []
    if per_class:
        rows = []
        for r in per_class:
            f1 = r.get("f1")
            bar = (f'<span class="bar"><span style="width:{max(0.0, min(1.0, float(f1))) * 100:.1f}%"></span></span>'
                   if isinstance(f1, (int, float)) else "")
            rows.append([r.get("class"), _fixed3(r.get("precision")), _fixed3(r.get("recall")),
                         Markup(esc(_fixed3(f1)) + Markup(bar)), fmt_num(r.get("support"))])
        out += "<h3>Per class</h3>" + str(table(["class", "precision", "recall", "F1", "support"], rows,
                                                cls="perclass", numeric=(1, 2, 3, 4)))
    out += str(img(confusion_png, "confusion matrix heatmap",
                   caption="Rows: true class, columns: predicted class. Colour: share of the row; numbers: counts.",
                   width=760))
    extra = [(k, v) for k, v in metrics.items() if k not in ("per_class", "confusion_matrix", "class_names")]
    if extra:
        out += f"<details><summary>All metric values</summary>{kv_table(extra)}</details>"
    return Markup(out)


def _fixed3(value) -> str:
    """Scores with three decimals, so a column of them lines up (1.000 next to 0.854)."""
    return f"{float(value):.3f}" if isinstance(value, (int, float)) and not math.isnan(float(value)) else "–"


def _mistakes_section(mistakes_png) -> str:
    if not mistakes_png:
        return muted("Not computed (needs the model, the test data and metrics).")
    return img(mistakes_png, "most confident mistakes on the test set",
               caption="Test images the model got wrong with the highest confidence.")


def _embeddings_section(explorers: Sequence[Explorer]) -> tuple[Markup, Markup | None]:
    """The section's markup, and the lists its inline Bokeh explorers share as JSON (None when it draws none:
    then the page loads no BokehJS)."""
    if not explorers:
        return muted("No embeddings computed for this run (run `mlplab embed RUN`)."), None
    explorer_body = environment().get_template("explorer_embed.html").module.explorer_body
    docs = [read_explorer(ex.html) if ex.html else None for ex in explorers]
    items, shared = share_lists([doc.item for doc in docs if doc is not None])
    items = iter(items)
    out = []
    for i, (ex, doc) in enumerate(zip(explorers, docs)):
        body = ""
        if doc is not None:
            body = str(explorer_body(f"explorer-{i + 1}-plot", doc, doc.payload_with(next(items))))
        elif ex.html and is_self_contained(ex.html):
            # A page we did not write (or of another Bokeh version) is shown as it is. srcdoc keeps it inside this
            # file; no sandbox attribute: BokehJS does not render with the opaque origin a sandbox gives it. The
            # CSP above still applies to the frame.
            height = _PAGE_HEIGHT.search(ex.html)
            style = f' style="height:{min(int(height.group(1)), 2000)}px"' if height else ""
            body = (f'<iframe class="explorer" title="{esc(ex.title)}" loading="eager"{style} '
                    f'srcdoc="{esc(ex.html)}"></iframe>')
        elif ex.png:
            body = str(img(ex.png, ex.title))
            if ex.html:
                body += str(muted("The interactive page loads scripts from the network, so it is not inlined here."))
        else:
            body = str(muted("Nothing to show."))
        if body and ex.png and ex.html and (doc is not None or is_self_contained(ex.html)):
            body += f"<details><summary>Static picture</summary>{img(ex.png, ex.title)}</details>"
        note = f'<p class="muted">{esc(ex.note)}</p>' if ex.note else ""
        out.append(f'<article class="explorer-card" id="explorer-{i + 1}"><h3>{esc(ex.title)}</h3>{note}{body}</article>')
    inline = any(doc is not None for doc in docs)
    return Markup("".join(out)), (script_json(shared) if inline else None)


def _environment_section(manifest) -> Markup:
    if not manifest:
        return muted("No manifest.json in the run.")
    return kv_table(flatten(manifest))


CSS = """
:root{--fg:#1f2328;--muted:#5a6270;--line:#e3e6ea;--bg:#fff;--soft:#f6f8fa;--accent:#4477AA;--warn:#b35900}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
.wrap{max-width:1100px;margin:0 auto;padding:24px 20px 64px}
header h1{font-size:1.6rem;margin:0 0 4px}
header p{margin:0;color:var(--muted)}
a{color:var(--accent)}
nav.toc{margin:16px 0 8px;padding:10px 12px;background:var(--soft);border-radius:8px}
nav.toc ol{margin:0;padding:0;list-style:none;display:flex;flex-wrap:wrap;gap:4px 14px}
nav.toc a{color:var(--accent);text-decoration:none;font-size:.92rem}
nav.toc a:hover{text-decoration:underline}
section{padding-top:18px;margin-top:18px;border-top:1px solid var(--line)}
h2{font-size:1.25rem;margin:0 0 10px}
h3{font-size:1rem;margin:18px 0 8px}
.muted{color:var(--muted)}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.86rem}
pre.summary{margin:0;padding:12px;background:var(--soft);border-radius:6px;white-space:pre}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}
table{border-collapse:collapse;font-size:.9rem;min-width:50%}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv td:first-child{white-space:nowrap}
table.kv td:last-child{word-break:break-word}
figure{margin:12px 0}
figure img{display:block;max-width:100%;height:auto;border-radius:4px}
figcaption{color:var(--muted);font-size:.86rem;margin-top:4px}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;margin:8px 0 14px}
.stat{background:var(--soft);border-radius:8px;padding:10px 12px}
.stat .label{display:block;color:var(--muted);font-size:.8rem}
.stat .value{display:block;font-size:1.35rem;font-weight:600;font-variant-numeric:tabular-nums}
.stat .sub{display:block;color:var(--muted);font-size:.8rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0 0 12px}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;word-break:break-word}
.callout{padding:10px 12px;border-radius:6px;margin:10px 0;border-left:4px solid var(--accent);background:#eef3f9}
.callout.warn{border-left-color:var(--warn);background:#fdf3e7}
ul.chips{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:6px}
ul.chips li{background:var(--soft);border-radius:12px;padding:2px 10px;font-size:.88rem}
ul.chips .idx{color:var(--muted);font-variant-numeric:tabular-nums}
.bar{display:inline-block;width:60px;height:6px;background:var(--line);border-radius:3px;margin-left:8px;vertical-align:middle}
.bar span{display:block;height:100%;background:var(--accent);border-radius:3px}
details{margin:10px 0}
summary{cursor:pointer;color:var(--accent)}
iframe.explorer{display:block;width:100%;height:min(760px,90vh);border:1px solid var(--line);border-radius:6px;background:#fff}
.explorer-card{margin-bottom:18px}
.bokeh-root{overflow-x:auto;max-width:100%}
footer{margin-top:32px;color:var(--muted);font-size:.85rem}
@media (max-width:640px){body{font-size:14px}.wrap{padding:14px 12px 40px}header h1{font-size:1.3rem}
 dl.facts{grid-template-columns:1fr}dl.facts dd{margin-bottom:6px}.stat .value{font-size:1.15rem}}
@media print{nav.toc,iframe.explorer{display:none}}
""" + EXPLORER_CSS


def build_report(
    *,
    title: str,
    config: dict,
    run_path: str | None = None,
    history: Sequence[dict] = (),
    metrics: dict | None = None,
    summary_text: str | None = None,
    layer_configs: Sequence[dict] | None = None,
    figures: dict[str, bytes] | None = None,
    explorers: Sequence[Explorer] = (),
    manifest: dict | None = None,
    notes: Sequence[str] = (),
    generated: str | None = None,
    extra_sections: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The report as one HTML string.

    figures maps "curves", "confusion", "samples", "mistakes" to PNG bytes (missing keys are reported as not
    computed). Every section in SECTIONS is always present, so links and tests can rely on the ids.
    extra_sections are (id, title, body markup) placed after "embeddings"; the caller escapes the body.
    """
    figures = figures or {}
    config = config or {}
    embeddings, shared = _embeddings_section(list(explorers))
    bodies = {
        "overview": _overview(title, run_path, config, list(history), metrics, list(notes), manifest),
        "data": _data_section(config, figures.get("samples")),
        "model": _model_section(summary_text, list(layer_configs or [])),
        "curves": _curves_section(list(history), figures.get("curves")),
        "metrics": _metrics_section(metrics, figures.get("confusion")),
        "mistakes": _mistakes_section(figures.get("mistakes")),
        "embeddings": embeddings,
        "config": kv_table(flatten(config)) if config else muted("No config."),
        "environment": _environment_section(manifest),
    }
    order = list(SECTIONS)
    at = order.index(("embeddings", "Hidden features")) + 1
    for sid, label, body in extra_sections:
        bodies[sid] = Markup(body)  # markup the caller built and escaped (see the docstring)
        order.insert(at, (sid, label))
        at += 1
    subtitle = "mlplab run report" + (f" · generated {generated}" if generated else "")
    return render("report.html", title=title, subtitle=subtitle, sections=order, bodies=bodies, css=Markup(CSS),
                  bokeh_js=bokeh_bundle() if shared is not None else None, shared=shared)
