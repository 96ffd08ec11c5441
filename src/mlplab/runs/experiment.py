"""`mlplab run FILE.toml`: the stages of an experiment file, end to end.

An experiment file has top-level `name`, `description`, `data`, a `[defaults]` table of training options
(the same keys as `mlplab train --config`) and a list of `[[stage]]` tables, run in order:

    kind = "train"     name, note, + any training option      a new run in OUT/<name>
    kind = "continue"  run, epochs (+ note)                    train an earlier stage's run further (Keras fit again)
    kind = "embed"     run, layers, methods, n, split, seed    2-D maps of hidden layers (writes RUN/embeddings)
    kind = "report"    runs (default: all)                     RUN/report.html for each run
    kind = "compare"   runs (default: all), title              OUT/compare.{png,svg,html}

Every key is checked before anything runs: an unknown key or a wrong type is one line with its key path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlplab.errors import MlplabError
from mlplab.inspect.embed import METHODS
from mlplab.runs.config import TrainOptions, read_toml

TOP_KEYS = {"name", "description", "data", "defaults", "stage"}
STAGE_KEYS = {
    "train": {"kind", "name", "note"} | set(TrainOptions.keys()) - {"data"},
    "continue": {"kind", "run", "epochs", "note"},
    "embed": {"kind", "run", "layers", "methods", "n", "split", "seed", "note"},
    "report": {"kind", "runs", "note"},
    "compare": {"kind", "runs", "title", "note"},
}


@dataclass
class Stage:
    kind: str
    where: str                 # "stage[3]" for messages
    options: dict = field(default_factory=dict)


@dataclass
class Experiment:
    name: str
    description: str
    data: str
    defaults: TrainOptions
    stages: list[Stage]
    path: Path


def _expect(value, kind, where: str, what: str):
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise MlplabError(f"{where} must be {what} (got {value!r})")
    return value


def _str_list(value, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise MlplabError(f"{where} must be a string or a non-empty list of strings (got {value!r})")


def load_experiment(path, *, data: str | None = None) -> Experiment:
    path = Path(path)
    doc = read_toml(path)
    where = str(path)
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise MlplabError(f"{where}: unknown key {unknown[0]!r}; allowed at the top level: {', '.join(sorted(TOP_KEYS))}")
    name = _expect(doc.get("name", path.stem), str, f"{where}: name", "a string")
    description = _expect(doc.get("description", ""), str, f"{where}: description", "a string")
    data_name = data or _expect(doc.get("data", "fashion-mnist"), str, f"{where}: data", "a string")
    defaults_doc = _expect(doc.get("defaults", {}), dict, f"{where}: defaults", "a table")
    defaults = TrainOptions.from_mapping({**defaults_doc, "data": data_name}, where=f"{where}: defaults")
    raw_stages = doc.get("stage")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise MlplabError(f"{where}: needs at least one [[stage]] table")
    stages, run_names = [], []
    for i, raw in enumerate(raw_stages, start=1):
        sw = f"{where}: stage[{i}]"
        _expect(raw, dict, sw, "a table")
        kind = raw.get("kind", "train")
        if not isinstance(kind, str) or kind not in STAGE_KEYS:
            raise MlplabError(f"{sw}.kind must be one of: {', '.join(STAGE_KEYS)} (got {kind!r})")
        unknown = sorted(set(raw) - STAGE_KEYS[kind])
        if unknown:
            raise MlplabError(f"{sw}: unknown key {unknown[0]!r} for a {kind} stage; "
                              f"allowed: {', '.join(sorted(STAGE_KEYS[kind]))}")
        opts = {k: v for k, v in raw.items() if k not in ("kind", "note")}
        if "note" in raw:
            _expect(raw["note"], str, f"{sw}.note", "a string")
        if kind == "train":
            run = _expect(opts.pop("name", f"stage{i}"), str, f"{sw}.name", "a string")
            if not run or "/" in run or "\\" in run or run in (".", ".."):
                raise MlplabError(f"{sw}.name must be a plain folder name (no '/', not '.' or '..'); got {run!r}")
            if run in run_names:
                raise MlplabError(f"{sw}.name {run!r} is used by an earlier stage; names must be unique")
            run_names.append(run)
            train_opts = TrainOptions.from_mapping(opts, where=sw, base=defaults)
            stages.append(Stage(kind, sw, {"name": run, "train": train_opts, "note": raw.get("note", "")}))
            continue
        for key in ("run",):
            if key in opts:
                _expect(opts[key], str, f"{sw}.{key}", "a string")
                if opts[key] not in run_names:
                    raise MlplabError(f"{sw}.run {opts[key]!r} is not the name of an earlier train stage; "
                                      f"known: {', '.join(run_names) or 'none'}")
            elif kind in ("continue", "embed"):
                raise MlplabError(f"{sw}: a {kind} stage needs run = \"<name of an earlier train stage>\"")
        if "runs" in opts:
            opts["runs"] = _str_list(opts["runs"], f"{sw}.runs")
            for r in opts["runs"]:
                if r not in run_names:
                    raise MlplabError(f"{sw}.runs: {r!r} is not an earlier train stage; known: {', '.join(run_names)}")
        if kind == "continue":
            _expect(opts.get("epochs"), int, f"{sw}.epochs", "an integer (the total number of epochs to reach)")
        if kind == "embed":
            opts["layers"] = _str_list(opts.get("layers", "dense_2"), f"{sw}.layers")
            opts["methods"] = _str_list(opts.get("methods", "tsne"), f"{sw}.methods")
            for method in opts["methods"]:
                if method not in METHODS:
                    raise MlplabError(f"{sw}.methods: unknown embedding method {method!r}; "
                                      f"choose one of: {', '.join(METHODS)}")
            _expect(opts.setdefault("n", 1000), int, f"{sw}.n", "an integer")
            if opts["n"] < 10:
                raise MlplabError(f"{sw}.n must be >= 10 (got {opts['n']})")
            _expect(opts.setdefault("split", "test"), str, f"{sw}.split", "a string")
            _expect(opts.setdefault("seed", 0), int, f"{sw}.seed", "an integer")
        if kind == "compare":
            _expect(opts.setdefault("title", name), str, f"{sw}.title", "a string")
        opts["note"] = raw.get("note", "")
        stages.append(Stage(kind, sw, opts))
    return Experiment(name, description, data_name, defaults, stages, path)


@dataclass
class StageResult:
    stage: Stage
    summary: str                  # one line for the console
    paths: list[Path] = field(default_factory=list)


def run_experiment(exp: Experiment, out, *, overwrite: bool = False, callbacks_for=None, on_stage=None,
                   on_stage_done=None) -> list[StageResult]:
    """Run every stage in order. `callbacks_for(stage)` gives each stage's training callbacks (progress bars);
    `on_stage(index, stage)` / `on_stage_done(result)` let the CLI announce progress."""
    from mlplab.runs.session import resume_run, train_run
    from mlplab.runs.writer import prepare_run_dir

    out = Path(out)
    run_paths = {s.options["name"]: out / s.options["name"] for s in exp.stages if s.kind == "train"}
    if not overwrite:
        taken = [p for p in run_paths.values() if p.exists() and any(p.iterdir())]
        if taken:
            raise MlplabError(f"{taken[0]} already exists; choose another --out or add --overwrite")
    else:
        for p in run_paths.values():  # refuses folders that are not runs, before any stage spends time
            prepare_run_dir(p, overwrite=True)
    results: list[StageResult] = []
    notes: dict[str, list[str]] = {name: [] for name in run_paths}
    for index, stage in enumerate(exp.stages, start=1):
        if on_stage is not None:
            on_stage(index, stage)
        o = stage.options
        cbs = callbacks_for(stage) if callbacks_for is not None else []
        if stage.kind == "train":
            res = train_run(o["train"], run_paths[o["name"]], overwrite=overwrite, callbacks=cbs)
            if o["note"]:
                notes[o["name"]].append(o["note"])
            result = StageResult(stage, _train_line(o["name"], res), [res.path])
        elif stage.kind == "continue":
            res = resume_run(run_paths[o["run"]], epochs=o["epochs"], callbacks=cbs)
            if o["note"]:
                notes[o["run"]].append(o["note"])
            result = StageResult(stage, _train_line(o["run"], res), [res.path])
        elif stage.kind == "embed":
            result = _embed_stage(stage, run_paths[o["run"]])
            if o["note"]:
                notes[o["run"]].append(o["note"])
        elif stage.kind == "report":
            from mlplab.runs.folder import open_run
            from mlplab.runs.report import write_run_report

            paths = []
            for name in o.get("runs") or list(run_paths):
                rep = write_run_report(open_run(run_paths[name]), notes=notes[name])
                paths.append(rep.report)
            result = StageResult(stage, f"{len(paths)} report(s) written", paths)
        else:  # compare
            from mlplab.runs.folder import open_run
            from mlplab.runs.compare import write_comparison

            names = o.get("runs") or list(run_paths)
            cmp = write_comparison([open_run(run_paths[n]) for n in names], out, names, title=o["title"])
            result = StageResult(stage, f"comparison of {len(names)} runs", [cmp.html, cmp.png])
        results.append(result)
        if on_stage_done is not None:
            on_stage_done(result)
        if stage.kind in ("train", "continue") and res.metrics is None:
            break  # interrupted (Ctrl-C): later stages would work on an unfinished run
    return results


def _train_line(name: str, res) -> str:
    if res.metrics is None:
        return f"{name}: interrupted after {res.history.epochs_done} epochs"
    extra = f", stopped early at epoch {res.history.stopped_early_at}" if res.history.stopped_early_at else ""
    return (f"{name}: {res.history.epochs_done} epochs{extra}, test accuracy "
            f"{res.metrics['test_accuracy']:.4f}")


def _embed_stage(stage: Stage, run_path: Path) -> StageResult:
    from mlplab.runs.maps import embed_run
    from mlplab.runs.folder import open_run

    o = stage.options
    run = open_run(run_path)
    paths, parts = [], []
    for method in o["methods"]:
        res = embed_run(run, layer=",".join(o["layers"]), method=method, n=o["n"], split=o["split"], seed=o["seed"])
        paths += [p for key, p in res.paths.items() if key in ("html", "png")]
        for m in res.maps:
            knn = m.quality.get("knn_accuracy")
            parts.append(f"{m.layer} {method}: 10-NN accuracy {knn:.3f}" if knn is not None else f"{m.layer} {method}")
    return StageResult(stage, "; ".join(parts), paths)
