"""The comparison page (compare.html) from plain values: one row of numbers per run, the overlaid curves, links.

runs/compare.py gathers the values from run folders; this module only draws them, through templates/compare.html
and the report's stylesheet, helpers and escaping.
"""

from __future__ import annotations

from typing import Sequence

from markupsafe import Markup

from mlplab.viz.pages import esc, render
from mlplab.viz.report import CSS, fmt_loss, fmt_num, fmt_pct, img, table

COLUMNS = ["run", "epochs", "best epoch", "best val loss", "val acc at best", "test loss", "test acc", "report"]


def build_compare_page(rows: Sequence[dict], *, png: bytes | None, links: Sequence[str | None] = (),
                       title: str = "Run comparison") -> str:
    """Self-contained comparison page; links[i] is a relative href to run i's report (or None)."""
    links = list(links) + [None] * (len(rows) - len(links))
    body_rows = []
    for row, href in zip(rows, links):
        link = Markup(f'<a href="{esc(href)}">report</a>') if href else "–"
        body_rows.append([
            row["name"], fmt_num(row["epochs"]), fmt_num(row["best_epoch"]), fmt_loss(row["best_val_loss"]),
            fmt_pct(row["best_val_accuracy"]), fmt_loss(row["test_loss"]), fmt_pct(row["test_accuracy"]), link,
        ])
    tbl = table(COLUMNS, body_rows, cls="compare", numeric=(1, 2, 3, 4, 5, 6))
    picture = img(png, "learning curves of the compared runs overlaid",
                  caption="Solid: validation, dashed: train; dots mark each run's best validation loss.")
    return render("compare.html", title=title, rows=rows, table=tbl, picture=picture, css=Markup(CSS), bokeh_js=None)
