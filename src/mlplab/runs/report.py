"""From a run directory to its pictures and report: RUN/plots/*.png|svg and RUN/report.html.

This is the glue between mlplab.runs.folder (what a run holds) and the plain-value builders in curves, confusion,
gallery and report. Parts that need more than the run's files (the dataset for galleries and mistakes) are
optional: when they cannot be had (e.g. MNIST not downloaded and no network), the report says so in a note
instead of failing, because the curves and metrics are still worth reading.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mlplab.atomic import atomic_write_text
from mlplab.runs.lock import writes_run
from mlplab.errors import MlplabError
from mlplab.inspect.embed import METHODS, method_title
from mlplab.viz.confusion import confusion_figure
from mlplab.viz.curves import learning_curves
from mlplab.viz.figures import save_figure
from mlplab.viz.gallery import confident_mistakes, mistakes_figure, samples_figure
from mlplab.viz.report import Explorer, build_report

log = logging.getLogger(__name__)

@dataclass
class ReportResult:
    report: Path
    plots: dict[str, dict[str, Path]] = field(default_factory=dict)  # figure name -> {"png": path, "svg": path}
    notes: list[str] = field(default_factory=list)                 # what could not be included, and why


def _stopped_early(manifest: dict | None) -> tuple[int | None, int | None]:
    manifest = manifest or {}
    stopped = manifest.get("stopped_early_at")
    restored = manifest.get("restored_best_epoch")
    return (int(stopped) if stopped else None), (int(restored) if restored else None)


def find_explorers(embeddings_dir: Path, patterns=None) -> list[Explorer]:
    """Explorer pages and pictures in a maps folder: <stem>.html and/or <stem>.png, plus <stem>.json metrics.

    patterns: shell patterns matched against the stem (e.g. "dense_2-*"); None takes every map, [] none.
    """
    import fnmatch

    if not embeddings_dir.is_dir():
        return []
    stems = sorted({p.stem for p in embeddings_dir.iterdir() if p.suffix in (".html", ".png")})
    if patterns is not None:
        stems = [s for s in stems if any(fnmatch.fnmatchcase(s, pat) for pat in patterns)]
    explorers = []
    for stem in stems:
        page, png = embeddings_dir / f"{stem}.html", embeddings_dir / f"{stem}.png"
        meta = _read_meta(embeddings_dir / f"{stem}.json")
        explorers.append(Explorer(
            title=explorer_title(stem, meta),
            html=page.read_text(encoding="utf-8") if page.exists() else None,
            png=png.read_bytes() if png.exists() else None,
            note=_quality_note(meta),
        ))
    return explorers


_STEM = re.compile(r"(?P<layers>.+)-(?P<method>" + "|".join(METHODS) + r")(?:-(?P<split>train|val|test))?"
                   r"(?:-n(?P<n>\d+))?(?:-seed(?P<seed>\d+))?")


def explorer_title(stem: str, meta: dict | None = None) -> str:
    """"dense_3-tsne-val-n500" -> "dense_3 · t-SNE · val split · 500 points" (runs.maps.map_stem names the files;
    names written before the split was part of them, "<layer>-<method>", are test-split maps)."""
    m = _STEM.fullmatch(stem)
    if not m:
        layer, _, method = stem.rpartition("-")
        return f"{layer} · {method_title(method.lower())}" if layer else stem
    meta = meta or {}
    split = meta.get("split") if meta.get("split") in ("train", "val", "test") else (m["split"] or "test")
    title = f"{m['layers']} · {method_title(m['method'])} · {split} split"
    n = meta.get("n") if isinstance(meta.get("n"), int) else (int(m["n"]) if m["n"] else None)
    if n is not None:
        title += f" · {n:,} points"
    seed = meta.get("seed") if isinstance(meta.get("seed"), int) else int(m["seed"] or 0)
    return title + (f" · seed {seed}" if seed else "")


def _read_meta(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _quality_note(meta: dict) -> str | None:
    quality = meta.get("quality", meta)
    parts = []
    for key, label in (("knn_accuracy", "kNN accuracy"), ("trustworthiness", "trustworthiness")):
        value = quality.get(key) if isinstance(quality, dict) else None
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:.3f}")
    return ", ".join(parts) or None


def _model_parts(run, notes: list[str]):
    """(model or None, summary text, layer configs); a run without weights still gets its architecture."""
    from mlplab.model import build, layer_configs, summary

    model = None
    try:
        model = run.model()
    except (MlplabError, FileNotFoundError, OSError) as exc:
        notes.append(f"Model weights could not be loaded ({exc}); mistakes are not shown.")
        m = run.config["model"]
        try:
            arch = build(m["spec"], int(m["input_dim"]))
        except MlplabError:
            return None, run.summary_text(), []
        return None, run.summary_text() or summary(arch), layer_configs(arch)
    return model, run.summary_text() or summary(model), layer_configs(model)


@writes_run("write the report")
def write_run_report(run, *, n_mistakes: int = 24, samples_per_class: int = 10, notes=(),
                     title: str | None = None, out_dir=None, maps=None, maps_dir=None) -> ReportResult:
    """Write RUN/plots/{curves,confusion,samples,mistakes}.{png,svg} and RUN/report.html; return their paths.

    `run` is a mlplab.runs.folder.Run. `notes` are extra lines shown at the top of the report (e.g. from an experiment).
    out_dir: write plots/ and report.html there instead (the run is only read). maps: shell patterns of the map
    files to include (None: all, []: none); maps_dir: where the maps are (default RUN/embeddings).
    """
    from mlplab.runs.folder import own_folder

    target = Path(out_dir) if out_dir is not None else run.path
    if maps_dir is not None and not Path(maps_dir).is_dir():
        raise MlplabError(f"maps folder {maps_dir} does not exist (it is where `mlplab embed --out` wrote them)")
    plots_dir = run.plots_dir if out_dir is None else own_folder(target, "plots")
    notes = list(notes)
    plots: dict[str, dict[str, Path]] = {}
    history = run.history().rows
    metrics = run.metrics()
    manifest = run.manifest()
    names = run.class_names
    label = title or run.name

    def save(name, fig):
        plots[name] = save_figure(fig, plots_dir / name)

    if history:
        stopped, restored = _stopped_early(manifest)
        save("curves", learning_curves(history, title=f"Learning curves · {label}", stopped_epoch=stopped,
                                       restored_epoch=restored))
    if metrics and metrics.get("confusion_matrix"):
        save("confusion", confusion_figure(metrics["confusion_matrix"], metrics.get("class_names") or names,
                                           title=f"Confusion matrix · {metrics.get('split', 'test')} set · "
                                                 f"{float(metrics.get('test_accuracy', 0)):.1%} correct"))

    model, summary_text, configs = _model_parts(run, notes)
    shape = run.config["data"].get("input_shape")
    try:
        test = run.split("test")
    except MlplabError as exc:
        test = None
        notes.append(f"The dataset could not be loaded ({exc}); sample images and mistakes are not shown.")
    if test is not None and len(test.y):
        save("samples", samples_figure(test.images, test.y, names, per_class=samples_per_class, shape=shape,
                                       title="Test samples per class"))
        if model is not None and n_mistakes > 0:
            from mlplab.train.predict import predict

            proba = predict(model, test.x)
            idx = confident_mistakes(proba, test.y, n_mistakes)
            save("mistakes", mistakes_figure(test.images, proba, test.y, names, idx, shape=shape,
                                             title=f"The {len(idx)} most confident mistakes on the test set"))

    figures = {name: paths["png"].read_bytes() for name, paths in plots.items()}
    explorers = find_explorers(Path(maps_dir) if maps_dir is not None else run.embeddings_dir, maps)
    if maps and not explorers:
        notes.append(f"No map matches {', '.join(maps)}; the report has no hidden-feature maps.")
    from mlplab.runs.dynamics import report_section

    dynamics_body = report_section(run)
    html = build_report(
        title=label,
        config=run.config,
        run_path=str(run.path),
        history=history,
        metrics=metrics,
        summary_text=summary_text,
        layer_configs=configs,
        figures=figures,
        explorers=explorers,
        manifest=manifest,
        notes=notes,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        extra_sections=[("dynamics", "Training dynamics", dynamics_body)] if dynamics_body else [],
    )
    report = atomic_write_text(target / "report.html", html)
    log.info("wrote %s", report)
    return ReportResult(report=report, plots=plots, notes=notes)
