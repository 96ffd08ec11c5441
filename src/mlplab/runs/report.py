"""From a run directory to its pictures and report: RUN/plots/*.png|svg and RUN/report.html.

This is the glue between mlplab.runs.folder (what a run holds) and the plain-value builders in curves, confusion,
gallery and report. Parts that need more than the run's files (the dataset for galleries and mistakes) are
optional: when they cannot be had (e.g. MNIST not downloaded and no network), the report says so in a note
instead of failing, because the curves and metrics are still worth reading.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mlplab.atomic import atomic_write_text
from mlplab.errors import MlplabError
from mlplab.viz.confusion import confusion_figure
from mlplab.viz.curves import learning_curves
from mlplab.viz.figures import save_figure
from mlplab.viz.gallery import confident_mistakes, mistakes_figure, samples_figure
from mlplab.viz.report import Explorer, build_report

log = logging.getLogger(__name__)

METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "mds": "MDS", "pca": "PCA"}


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


def find_explorers(embeddings_dir: Path) -> list[Explorer]:
    """Explorer pages and pictures in RUN/embeddings: <stem>.html and/or <stem>.png, plus <stem>.json metrics."""
    if not embeddings_dir.is_dir():
        return []
    stems = sorted({p.stem for p in embeddings_dir.iterdir() if p.suffix in (".html", ".png")})
    explorers = []
    for stem in stems:
        page, png = embeddings_dir / f"{stem}.html", embeddings_dir / f"{stem}.png"
        explorers.append(Explorer(
            title=explorer_title(stem),
            html=page.read_text(encoding="utf-8") if page.exists() else None,
            png=png.read_bytes() if png.exists() else None,
            note=_quality_note(embeddings_dir / f"{stem}.json"),
        ))
    return explorers


def explorer_title(stem: str) -> str:
    """"dense_3-tsne" -> "dense_3 · t-SNE" (the embeddings writer names files <layer>-<method>)."""
    layer, _, method = stem.rpartition("-")
    if not layer:
        return stem
    return f"{layer} · {METHOD_NAMES.get(method.lower(), method)}"


def _quality_note(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    quality = meta.get("quality", meta) if isinstance(meta, dict) else {}
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


def write_run_report(run, *, n_mistakes: int = 24, samples_per_class: int = 10, notes=(),
                     title: str | None = None) -> ReportResult:
    """Write RUN/plots/{curves,confusion,samples,mistakes}.{png,svg} and RUN/report.html; return their paths.

    `run` is a mlplab.runs.folder.Run. `notes` are extra lines shown at the top of the report (e.g. from an experiment).
    """
    notes = list(notes)
    plots: dict[str, dict[str, Path]] = {}
    history = run.history()
    metrics = run.metrics()
    manifest = run.manifest()
    names = run.class_names
    label = title or run.name

    def save(name, fig):
        plots[name] = save_figure(fig, run.plots_dir / name)

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
        explorers=find_explorers(run.embeddings_dir),
        manifest=manifest,
        notes=notes,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        extra_sections=[("dynamics", "Training dynamics", dynamics_body)] if dynamics_body else [],
    )
    report = atomic_write_text(run.path / "report.html", html)
    log.info("wrote %s", report)
    return ReportResult(report=report, plots=plots, notes=notes)
