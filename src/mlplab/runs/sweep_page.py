"""DIR/sweep.html from a study: the trial rows, Optuna's parameter importances and the best trials' curves,
handed as plain values to viz/sweep.py, which draws them."""

from __future__ import annotations

import math
from pathlib import Path

from mlplab.runs.sweep import best_row, open_existing_study, trial_rows

N_CURVES = 5  # the best trials whose learning curves are overlaid


def importances(study) -> dict[str, float]:
    """Optuna's parameter importances (get_param_importances, its default evaluator) over completed
    trials; {} when they cannot be told
    (fewer than two completed trials, or no parameter that varied)."""
    import optuna

    S = optuna.trial.TrialState
    done = study.get_trials(deepcopy=False, states=(S.COMPLETE,))
    if len(done) < 2:
        return {}
    import warnings

    try:
        with warnings.catch_warnings():  # "few trials in a regime": the page says how many trials there are
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every trial with the same values
        return {}


def _curves(rows: list[dict], best_numbers: list[int]) -> list[dict]:
    from mlplab.runs.folder import open_run
    from mlplab.errors import MlplabError

    out = []
    for n in best_numbers:
        row = next(r for r in rows if r["number"] == n)
        try:
            history = open_run(row["run"]).history()
        except (MlplabError, OSError, TypeError):
            continue  # a run folder removed or never written: the table still shows the trial
        out.append({"number": n, "epoch": [int(r["epoch"]) for r in history.rows],
                    "val_accuracy": [_f(r.get("val_accuracy")) for r in history.rows],
                    "val_loss": [_f(r.get("val_loss")) for r in history.rows]})
    return out


def _f(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def sweep_values(out) -> dict:
    study = open_existing_study(out)
    rows = trial_rows(study)
    objective = study.user_attrs.get("objective", "value")
    maximize = study.direction.name == "MAXIMIZE"
    ranked = sorted((r for r in rows if r["state"] in ("COMPLETE", "PRUNED") and r["value"] is not None),
                    key=lambda r: -r["value"] if maximize else r["value"])
    best = best_row(study, rows)
    return {"title": f"Sweep {Path(out).resolve().name}", "objective": objective, "maximize": maximize,
            "rows": rows, "best": best, "importances": importances(study),
            "curves": _curves(rows, [r["number"] for r in ranked[:N_CURVES]]),
            "params": sorted({k for r in rows for k in r["params"]})}


def write_sweep_page(out) -> Path:
    from mlplab.atomic import atomic_write_text
    from mlplab.viz.sweep import build_sweep_page

    path = Path(out) / "sweep.html"
    atomic_write_text(path, build_sweep_page(sweep_values(out)))
    return path
