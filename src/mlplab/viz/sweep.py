"""The sweep page (sweep.html) from plain values: a sortable trials table, the optimisation history, parallel
coordinates, parameter importances and the best trials' curves overlaid. Four Bokeh documents drawn by one
inlined BokehJS (templates/sweep.html); the table sorts with a few lines of script."""

from __future__ import annotations

import json
import math
from importlib.metadata import version

from markupsafe import Markup

from mlplab.viz.pages import bokeh_bundle, esc, render, script_json
from mlplab.viz.palette import TOL_MUTED
from mlplab.viz.report import CSS

STATE_COLORS = {"COMPLETE": "#4477AA", "PRUNED": "#DDAA33", "FAIL": "#BB5566", "INTERRUPTED": "#999999",
                "RUNNING": "#228833", "WAITING": "#999999"}
PAGE_CSS = CSS + """
table.trials th{cursor:pointer;user-select:none}
table.trials th[aria-sort=ascending]::after{content:" \\25B2"}
table.trials th[aria-sort=descending]::after{content:" \\25BC"}
.plot{margin:8px 0 18px;min-height:320px}
td.state-FAIL,td.state-INTERRUPTED{color:#BB5566}
td.state-PRUNED{color:#996600}
"""


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}"
    return str(v)


def _table(values: dict) -> Markup:
    params = values["params"]
    headers = ["trial", "state", values["objective"], "test accuracy", "epochs", "seconds"] + params + ["note"]
    numeric = {0, 2, 3, 4, 5}
    head = "".join(f'<th data-type="{"num" if i in numeric else "text"}">{esc(h)}</th>'
                   for i, h in enumerate(headers))
    body = []
    for r in values["rows"]:
        cells = [r["number"], r["state"], r["value"], r["test_accuracy"], r["epochs"], r["seconds"]]
        cells += [r["params"].get(p) for p in params] + [r["reason"] or ""]
        tds = []
        for i, c in enumerate(cells):
            key = "" if _num(c) is None else f' data-key="{esc(repr(float(c)))}"'
            cls = f' class="num"' if i in numeric or _num(c) is not None else ""
            if i == 1:
                cls = f' class="state-{esc(c)}"'
            tds.append(f"<td{cls}{key}>{esc(_cell(c))}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return Markup(f'<div class="scroll"><table class="trials" id="trials"><thead><tr>{head}</tr></thead>'
                  f'<tbody>{"".join(body)}</tbody></table></div>')


def _history(values: dict):
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    rows = [r for r in values["rows"] if _num(r["value"]) is not None]
    p = figure(height=320, sizing_mode="stretch_width", x_axis_label="trial", y_axis_label=values["objective"],
               tools="pan,wheel_zoom,box_zoom,reset,save")
    for state in sorted({r["state"] for r in rows}):
        sub = [r for r in rows if r["state"] == state]
        src = ColumnDataSource({"x": [r["number"] for r in sub], "y": [r["value"] for r in sub],
                                "state": [state] * len(sub)})
        p.scatter("x", "y", source=src, size=8, color=STATE_COLORS.get(state, "#777777"), legend_label=state)
    done = sorted((r for r in rows if r["state"] == "COMPLETE"), key=lambda r: r["number"])
    xs, ys, best = [], [], None
    for r in done:
        best = r["value"] if best is None else (max if values["maximize"] else min)(best, r["value"])
        xs.append(r["number"])
        ys.append(best)
    if xs:
        p.step(xs, ys, mode="after", line_width=2, color="#222222", legend_label="best so far")
    p.add_tools(HoverTool(tooltips=[("trial", "@x"), (values["objective"], "@y"), ("state", "@state")]))
    p.legend.location = "bottom_right" if values["maximize"] else "top_right"
    return p


def _axis_positions(rows, name):
    """A parameter's values on [0, 1] for parallel coordinates (categories by their order; log axes for ranges
    over more than two decades)."""
    vals = [r["params"].get(name) for r in rows]
    nums = [v for v in vals if _num(v) is not None]
    if len(nums) == len([v for v in vals if v is not None]) and nums:
        lo, hi = min(nums), max(nums)
        use_log = lo > 0 and hi / lo > 100
        f = math.log10 if use_log else (lambda v: v)
        span = (f(hi) - f(lo)) or 1.0
        return [None if v is None else (f(v) - f(lo)) / span for v in vals], f"{name} ({_cell(lo)}–{_cell(hi)})"
    cats = sorted({str(v) for v in vals if v is not None})
    pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
    return [None if v is None else pos[str(v)] for v in vals], f"{name} ({' < '.join(cats)})"


def _parallel(values: dict):
    from bokeh.models import ColumnDataSource, FixedTicker, HoverTool
    from bokeh.palettes import Viridis256
    from bokeh.plotting import figure

    rows = [r for r in values["rows"] if _num(r["value"]) is not None and r["state"] in ("COMPLETE", "PRUNED")]
    names = values["params"]
    axes = [_axis_positions(rows, n) for n in names]
    objs = [r["value"] for r in rows]
    lo, hi = (min(objs), max(objs)) if objs else (0.0, 1.0)
    obj_pos = [((v - lo) / ((hi - lo) or 1.0)) for v in objs]
    labels = [label for _, label in axes] + [values["objective"]]
    p = figure(height=360, sizing_mode="stretch_width", x_range=(-0.2, len(labels) - 0.8), y_range=(-0.05, 1.05),
               tools="pan,wheel_zoom,reset,save")
    p.xaxis.ticker = FixedTicker(ticks=list(range(len(labels))))
    p.xaxis.major_label_overrides = {i: lab for i, lab in enumerate(labels)}
    p.xaxis.major_label_orientation = 0.35
    p.yaxis.visible = False
    xs, ys, colors, numbers = [], [], [], []
    for j, r in enumerate(rows):
        pts = [(i, pos[j]) for i, (pos, _) in enumerate(axes) if pos[j] is not None] + [(len(axes), obj_pos[j])]
        xs.append([x for x, _ in pts])
        ys.append([y for _, y in pts])
        # brighter (yellow) = better objective, on a perceptually even scale
        q = obj_pos[j] if values["maximize"] else 1 - obj_pos[j]
        colors.append(Viridis256[min(255, int(q * 255))])
        numbers.append(r["number"])
    src = ColumnDataSource({"xs": xs, "ys": ys, "color": colors, "trial": numbers, "value": objs})
    p.multi_line("xs", "ys", source=src, line_color="color", line_width=2, line_alpha=0.75)
    for i in range(len(labels)):
        p.line([i, i], [0, 1], color="#bbbbbb")
    p.add_tools(HoverTool(tooltips=[("trial", "@trial"), (values["objective"], "@value")]))
    return p


def _importances(values: dict):
    from bokeh.plotting import figure

    imp = values["importances"]
    names = sorted(imp, key=lambda k: imp[k])
    p = figure(height=max(160, 40 * len(names) + 60), sizing_mode="stretch_width", y_range=names or ["(none)"],
               x_axis_label="importance (Optuna's get_param_importances)", tools="save")
    if names:
        p.hbar(y=names, right=[imp[n] for n in names], height=0.6, color="#4477AA")
    return p


def _curves(values: dict):
    from bokeh.models import HoverTool
    from bokeh.plotting import figure

    metric = "val_accuracy" if values["objective"] == "val_accuracy" else "val_loss"
    p = figure(height=320, sizing_mode="stretch_width", x_axis_label="epoch", y_axis_label=metric,
               tools="pan,wheel_zoom,box_zoom,reset,save")
    for i, c in enumerate(values["curves"]):
        pts = [(e, v) for e, v in zip(c["epoch"], c[metric]) if v is not None]
        if pts:
            p.line([e for e, _ in pts], [v for _, v in pts], line_width=2,
                   color=TOL_MUTED[i % len(TOL_MUTED)], legend_label=f"trial {c['number']}")
    if values["curves"]:
        p.legend.location = "bottom_right" if metric == "val_accuracy" else "top_right"
    p.add_tools(HoverTool(tooltips=[("epoch", "@x"), (metric, "@y")]))
    return p


def build_sweep_page(values: dict) -> str:
    """Self-contained sweep page from sweep_values() (runs/sweep_page.py)."""
    from bokeh.embed import json_item

    plots = {"history": _history(values), "parallel": _parallel(values), "importance": _importances(values),
             "curves": _curves(values)}
    items = {k: json.loads(json.dumps(json_item(p))) for k, p in plots.items()}
    best = values["best"]
    return render("sweep.html", title=values["title"], v=values, best=best, table=_table(values),
                  items={k: script_json(item) for k, item in items.items()}, bokeh=version("bokeh"),
                  n_importance=len(values["importances"]), css=Markup(PAGE_CSS), bokeh_js=bokeh_bundle())
