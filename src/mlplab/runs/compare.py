"""Several runs side by side: gathers each run's history and metrics, writes the overlaid curves
(compare.png/.svg) and compare.html, whose markup viz/compare.py builds from these values.

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
from mlplab.viz.compare import build_compare_page

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
