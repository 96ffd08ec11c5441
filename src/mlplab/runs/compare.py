"""Several runs side by side: overlaid curves (compare.png/.svg) and compare.html with a metrics table.

The page links each run's report by a relative path, so a folder of runs plus its comparison can be moved or
archived together and the links keep working offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mlplab.atomic import atomic_write_text
from mlplab.errors import MlplabError
from mlplab.viz.curves import compare_curves, history_summary
from mlplab.viz.figures import save_figure
from mlplab.viz.report import CSP, CSS, esc, fmt_loss, fmt_num, fmt_pct, img, table

COLUMNS = ["run", "epochs", "best epoch", "best val loss", "val acc at best", "test loss", "test acc", "report"]


def compare_rows(runs: Sequence[tuple[str, Sequence[dict], dict | None]]) -> list[dict]:
    """One summary dict per (name, history, metrics): best validation numbers and test metrics."""
    rows = []
    for name, history, metrics in runs:
        s = history_summary(history)
        rows.append({
            "name": name,
            "epochs": s["epochs"],
            "best_epoch": s["best_epoch"] if s["monitor"] == "val_loss" else None,
            "best_val_loss": s["best_val_loss"],
            "best_val_accuracy": s["best_val_accuracy"],
            "test_loss": (metrics or {}).get("test_loss"),
            "test_accuracy": (metrics or {}).get("test_accuracy"),
        })
    return rows


def build_compare_page(rows: Sequence[dict], *, png: bytes | None, links: Sequence[str | None] = (),
                       title: str = "Run comparison") -> str:
    """Self-contained comparison page; links[i] is a relative href to run i's report (or None)."""
    links = list(links) + [None] * (len(rows) - len(links))
    body_rows = []
    for row, href in zip(rows, links):
        link = f'<a href="{esc(href)}">report</a>' if href else "–"
        body_rows.append([
            esc(row["name"]), esc(fmt_num(row["epochs"])), esc(fmt_num(row["best_epoch"])),
            esc(fmt_loss(row["best_val_loss"])), esc(fmt_pct(row["best_val_accuracy"])),
            esc(fmt_loss(row["test_loss"])), esc(fmt_pct(row["test_accuracy"])), link,
        ])
    tbl = table(COLUMNS, body_rows, cls="compare", numeric=(1, 2, 3, 4, 5, 6))
    picture = img(png, "learning curves of the compared runs overlaid",
                  caption="Solid: validation, dashed: train; dots mark each run's best validation loss.")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)} · mlplab</title><style>{CSS}</style></head>"
        f'<body><div class="wrap"><header><h1>{esc(title)}</h1><p>mlplab comparison of {len(rows)} runs</p></header>'
        f'<section id="table"><h2>Best validation and test metrics</h2>{tbl}</section>'
        f'<section id="curves"><h2>Learning curves</h2>{picture}</section>'
        "<footer>Written by mlplab. This file is self-contained: it makes no network requests.</footer>"
        "</div></body></html>\n"
    )


@dataclass
class CompareResult:
    png: Path
    svg: Path
    html: Path
    rows: list[dict]


def write_comparison(runs, out_dir, names: Sequence[str] | None = None, *, title: str = "Run comparison") -> CompareResult:
    """Write OUT/compare.png, compare.svg and compare.html for the given mlplab.runs.folder.Run objects."""
    runs = list(runs)
    if names is not None and len(names) != len(runs):
        raise MlplabError(f"--names gives {len(names)} names for {len(runs)} runs; give one name per run")
    names = list(names) if names is not None else _unique_names(runs)
    out_dir = Path(out_dir)
    data = [(name, run.history().rows, run.metrics()) for name, run in zip(names, runs)]
    paths = save_figure(compare_curves([(n, h) for n, h, _ in data], title=title), out_dir / "compare")
    rows = compare_rows(data)
    links = []
    for run in runs:
        report = run.path / "report.html"
        links.append(os.path.relpath(report, out_dir) if report.exists() else None)
    html = build_compare_page(rows, png=paths["png"].read_bytes(), links=links, title=title)
    page = atomic_write_text(out_dir / "compare.html", html)
    return CompareResult(png=paths["png"], svg=paths["svg"], html=page, rows=rows)


def _unique_names(runs) -> list[str]:
    # Folder names; when two runs share one (a/run, b/run) the parent disambiguates.
    names = [run.path.name for run in runs]
    if len(set(names)) < len(names):
        names = [f"{run.path.parent.name}/{run.path.name}" for run in runs]
    return names
