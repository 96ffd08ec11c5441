"""`mlplab run FILE.toml`: the stages of an experiment file, end to end.

An experiment file has top-level `name`, `description`, `data`, a `[defaults]` table of training options
(the same keys as `mlplab train --config`) and a list of `[[stage]]` tables, run in order:

    kind = "train"     name, note, + any training option      a new run in OUT/<name>
    kind = "continue"  run, epochs (+ note)                    train an earlier stage's run further (Keras fit again)
    kind = "embed"     run, layers, methods, n, split, seed    2-D maps of hidden layers (writes RUN/embeddings)
    kind = "report"    runs (default: all)                     RUN/report.html for each run
    kind = "compare"   runs (default: all), title              OUT/compare.{png,svg,html}

Every key is checked before anything runs: an unknown key or a wrong type is one line with its key path.
`overrides` (`mlplab run --set KEY=VALUE`) change keys before that check, so they are validated the same way.

Progress is recorded in OUT/experiment-state.json (atomically, after each stage): running the same
experiment again skips the stages already done and resumes an interrupted training stage from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from mlplab.errors import MlplabError
from mlplab.inspect.embed import METHODS
from mlplab.runs.config import TrainOptions, data_relative_to, read_toml

TOP_KEYS = {"name", "description", "data", "defaults", "stage"}
EMBED_SPLITS = ("train", "val", "test")
STATE_FILE = "experiment-state.json"
STATE_FORMAT = "mlplab-experiment-state/1"
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


def _parse_value(text: str):
    """A --set value in TOML syntax (3, 0.1, true, ["a", "b"], "quoted"); anything else is a bare string."""
    from mlplab.runs.config import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(doc: dict, overrides, where: str) -> dict:
    """`KEY=VALUE` sets a training option in [defaults] and KEY in every stage that has or allows it (except a
    continue stage's `epochs`, a total that follows its train stage); `defaults.KEY=VALUE` and
    `stage[N].KEY=VALUE` set one place. Values are TOML (3, 0.1, true, ["a"]) or a bare string."""
    import re

    doc = dict(doc)
    stages = [dict(t) if isinstance(t, dict) else t for t in doc.get("stage", [])] if isinstance(
        doc.get("stage"), list) else doc.get("stage")
    doc["stage"] = stages
    defaults = dict(doc["defaults"]) if isinstance(doc.get("defaults"), dict) else doc.get("defaults", {})
    doc["defaults"] = defaults
    train_keys = set(TrainOptions.keys())
    for item in overrides or ():
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise MlplabError(f"--set {item!r}: expected KEY=VALUE (e.g. epochs=3, stage[5].n=300, defaults.lr=0.1)")
        value = _parse_value(text.strip())
        m = re.fullmatch(r"stage\[(\d+)\]\.(\w+)", key)
        if m:
            i = int(m.group(1))
            if not isinstance(stages, list) or not 1 <= i <= len(stages) or not isinstance(stages[i - 1], dict):
                n = len(stages) if isinstance(stages, list) else 0
                raise MlplabError(f"--set {key}: the experiment has stages 1..{n}")
            stages[i - 1][m.group(2)] = value  # checked with the stage's other keys below
            continue
        if key.startswith("defaults."):
            if not isinstance(defaults, dict):
                raise MlplabError(f"--set {key}: {where}: defaults is not a table")
            defaults[key.removeprefix("defaults.")] = value
            continue
        hit = False
        if key in train_keys - {"data"} and isinstance(defaults, dict):
            defaults[key] = value
            hit = True
        for st in stages if isinstance(stages, list) else ():
            if not isinstance(st, dict):
                continue
            kind = st.get("kind", "train")
            allowed = STAGE_KEYS.get(kind, set()) - {"kind", "name", "run", "note"}
            if kind == "continue" or key not in allowed:
                continue
            if kind == "train" and key not in st:
                continue  # the stage takes it from [defaults], set above
            st[key] = value
            hit = True
        if not hit:
            stage_keys = sorted(set().union(*(STAGE_KEYS[k] for k in ("embed", "compare"))) - {"kind", "run", "note"})
            raise MlplabError(f"--set {key}: not a key of this experiment; use a training option "
                              f"({', '.join(sorted(train_keys - {'data'}))}), an embed/compare key "
                              f"({', '.join(stage_keys)}), defaults.KEY or stage[N].KEY")
    return doc


def load_experiment(path, *, data: str | None = None, overrides=()) -> Experiment:
    path = Path(path)
    where = str(path)
    doc = apply_overrides(read_toml(path), overrides, where)
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise MlplabError(f"{where}: unknown key {unknown[0]!r}; allowed at the top level: {', '.join(sorted(TOP_KEYS))}")
    name = _expect(doc.get("name", path.stem), str, f"{where}: name", "a string")
    description = _expect(doc.get("description", ""), str, f"{where}: description", "a string")
    defaults_doc = _expect(doc.get("defaults", {}), dict, f"{where}: defaults", "a table")
    if "data" in doc and "data" in defaults_doc:
        raise MlplabError(f"{where}: data is set both at the top level and in [defaults]; keep one")
    data_key = "data" if "data" in doc else "defaults.data"
    file_data = doc.get("data", defaults_doc.get("data", "fashion-mnist"))
    # --data is relative to the working folder; the file's own data to the file's folder
    data_name = data or data_relative_to(_expect(file_data, str, f"{where}: {data_key}", "a string"), path.parent)
    defaults = TrainOptions.from_mapping({**defaults_doc, "data": data_name}, where=f"{where}: defaults")
    raw_stages = doc.get("stage")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise MlplabError(f"{where}: needs at least one [[stage]] table")
    stages, run_names = [], []
    train_of: dict[str, TrainOptions] = {}    # run name -> its train options (to check later stages)
    reached: dict[str, int] = {}              # run name -> epochs it has after the stages so far
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
            train_of[run], reached[run] = train_opts, train_opts.epochs
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
            before = reached[opts["run"]]
            if opts["epochs"] <= before:
                raise MlplabError(f"{sw}.epochs is {opts['epochs']} but run {opts['run']!r} already has {before} "
                                  f"epochs by then; a continue stage gives the total to reach, more than {before}")
            reached[opts["run"]] = opts["epochs"]
        if kind == "embed":
            opts["layers"] = _str_list(opts.get("layers", "dense_2"), f"{sw}.layers")
            opts["methods"] = _str_list(opts.get("methods", "tsne"), f"{sw}.methods")
            for method in opts["methods"]:
                if method not in METHODS:
                    raise MlplabError(f"{sw}.methods: unknown method {method!r}; "
                                      f"choose one of: {', '.join(METHODS)}")
            _expect(opts.setdefault("n", 1000), int, f"{sw}.n", "an integer")
            if opts["n"] < 10:
                raise MlplabError(f"{sw}.n must be >= 10 (got {opts['n']})")
            split = opts.setdefault("split", "test")
            if split not in EMBED_SPLITS:
                raise MlplabError(f"{sw}.split must be one of: {', '.join(EMBED_SPLITS)} (got {split!r})")
            if split == "val" and train_of[opts["run"]].val_split == 0:
                raise MlplabError(f"{sw}.split is 'val' but run {opts['run']!r} trains with val_split = 0")
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
    notes: list[str] = field(default_factory=list)   # adjustments the user should know about (clamped n)
    skipped: bool = False         # done by an earlier `mlplab run` of the same experiment
    warnings: list[str] = field(default_factory=list)  # the loggers' (a tracking server that did not answer)


def stage_fingerprint(exp: Experiment, stage: Stage) -> str:
    """What a stage's result depends on (its options, the data), hashed: a changed stage is never skipped."""
    opts = {k: (v.as_dict() if isinstance(v, TrainOptions) else v) for k, v in stage.options.items() if k != "note"}
    text = json.dumps({"kind": stage.kind, "data": exp.data, "options": opts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_state(out: Path) -> dict:
    path = out / STATE_FILE
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MlplabError(f"{path} is not readable ({exc}); start the experiment again with --overwrite") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or not isinstance(state.get("stages"), dict):
        raise MlplabError(f"{path} is not an mlplab experiment state; start the experiment again with --overwrite")
    return state


def _write_state(out: Path, exp: Experiment, stages: dict) -> None:
    from mlplab.atomic import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / STATE_FILE, {"format": STATE_FORMAT, "experiment": exp.name, "stages": stages})


def _train_stage_done(path: Path, epochs: int) -> bool:
    """A run that finished (test metrics written) at its target, or stopped early before it."""
    from mlplab.runs.folder import open_run

    run = open_run(path)
    manifest = run.manifest() or {}
    return "test_accuracy" in manifest and (run.history().epochs_done >= epochs or bool(manifest.get("stopped_early_at")))


def run_experiment(exp: Experiment, out, *, overwrite: bool = False, callbacks_for=None, on_stage=None,
                   on_stage_done=None) -> list[StageResult]:
    """Run every stage in order. `callbacks_for(stage)` gives each stage's training callbacks (progress bars);
    `on_stage(index, stage)` / `on_stage_done(result)` let the CLI announce progress.

    Without `overwrite`, an experiment that ran into OUT before continues: stages recorded as done (with the
    same fingerprint) are skipped, an interrupted train or continue stage resumes from its checkpoint. A run
    folder that this experiment's state does not account for is never touched."""
    from mlplab.runs.session import resume_run, train_run
    from mlplab.runs.writer import prepare_run_dir

    out = Path(out)
    run_paths = {s.options["name"]: out / s.options["name"] for s in exp.stages if s.kind == "train"}
    # where a run logs (TensorBoard, MLflow) is its train stage's choice; resuming or continuing it logs there
    # too, so that its TensorBoard run and its MLflow run go on
    loggers = {s.options["name"]: {"tensorboard": s.options["train"].tensorboard, "mlflow": s.options["train"].mlflow}
               for s in exp.stages if s.kind == "train"}
    fingerprints = [stage_fingerprint(exp, st) for st in exp.stages]
    if overwrite:
        for p in run_paths.values():  # refuses folders that are not runs, before any stage spends time
            prepare_run_dir(p, overwrite=True)
        recorded: dict = {}
        if (out / STATE_FILE).exists():
            _write_state(out, exp, recorded)
    else:
        recorded = _read_state(out)
        recorded = recorded.get("stages", {}) if recorded else {}
        for index, stage in enumerate(exp.stages, start=1):
            if stage.kind != "train":
                continue
            p = run_paths[stage.options["name"]]
            if not (p.exists() and any(p.iterdir())):
                continue
            mine = recorded.get(str(index), {})
            if mine.get("fingerprint") != fingerprints[index - 1]:
                why = ("its stage changed since it was started" if mine else
                       "this experiment's state in OUT does not record it")
                raise MlplabError(f"{p} already exists and {why}; choose another --out or add --overwrite")
    results: list[StageResult] = []
    notes: dict[str, list[str]] = {name: [] for name in run_paths}
    changed: set[str] = set()  # runs that a stage of this invocation trained or embedded
    for index, stage in enumerate(exp.stages, start=1):
        o = stage.options
        if o.get("note") and stage.kind in ("train", "continue", "embed"):
            notes[o["name"] if stage.kind == "train" else o["run"]].append(o["note"])
        reads = _runs_of(stage, run_paths)
        mine = recorded.get(str(index), {})
        same = mine.get("fingerprint") == fingerprints[index - 1]
        # a done stage is skipped unless a run it reads was changed by a stage that ran now
        if same and mine.get("status") == "done" and not (reads & changed):
            result = StageResult(stage, "done in an earlier run; skipped", [Path(p) for p in mine.get("paths", [])],
                                 skipped=True)
            results.append(result)
            if on_stage is not None:
                on_stage(index, stage)
            if on_stage_done is not None:
                on_stage_done(result)
            continue
        if stage.kind in ("train", "continue", "embed"):
            changed |= reads
        if on_stage is not None:
            on_stage(index, stage)
        started = same and mine.get("status") == "started"
        recorded[str(index)] = {"fingerprint": fingerprints[index - 1], "status": "started"}
        _write_state(out, exp, recorded)
        cbs = callbacks_for(stage) if callbacks_for is not None else []
        res = None
        if stage.kind == "train":
            path = run_paths[o["name"]]
            if started and (path / "checkpoints" / "last.safetensors").exists():
                res = _resume_or_done(path, o["train"].epochs, cbs, resume_run, loggers[o["name"]])
            else:  # new, or interrupted before its first checkpoint: this stage's own folder starts again
                res = train_run(o["train"], path, overwrite=started or overwrite, callbacks=cbs)
            result = StageResult(stage, _train_line(o["name"], res), [res.path], warnings=list(res.warnings))
        elif stage.kind == "continue":
            res = _resume_or_done(run_paths[o["run"]], o["epochs"], cbs, resume_run, loggers[o["run"]])
            result = StageResult(stage, _train_line(o["run"], res), [res.path], warnings=list(res.warnings))
        elif stage.kind == "embed":
            result = _embed_stage(stage, run_paths[o["run"]])
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
        interrupted = res is not None and res.metrics is None
        if not interrupted:
            recorded[str(index)] = {"fingerprint": fingerprints[index - 1], "status": "done",
                                    "paths": [str(p) for p in result.paths]}
            _write_state(out, exp, recorded)
        results.append(result)
        if on_stage_done is not None:
            on_stage_done(result)
        if interrupted:
            break  # interrupted (Ctrl-C): later stages would work on an unfinished run
    return results


def _runs_of(stage: Stage, run_paths: dict) -> set[str]:
    o = stage.options
    if stage.kind == "train":
        return {o["name"]}
    if stage.kind in ("continue", "embed"):
        return {o["run"]}
    return set(o.get("runs") or run_paths)


def _resume_or_done(path: Path, epochs: int, callbacks, resume_run, loggers: dict):
    """Resume a run to `epochs`, logging where `loggers` says (tensorboard=, mlflow=); one that already got
    there (stopped after its last save) is simply done."""
    from mlplab.runs.folder import open_run
    from mlplab.runs.session import TrainResult

    if _train_stage_done(path, epochs):
        run = open_run(path)
        return TrainResult(path, run.history(), run.metrics(), None, target_epochs=epochs)
    return resume_run(path, epochs=epochs, callbacks=callbacks, **loggers)


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
    paths, parts, notes = [], [], []
    n = o["n"]
    available = len(run.split_indices(o["split"]))
    if n > available:
        # a file written for MNIST's 10,000 test images still runs on a smaller dataset (digits: 360)
        notes.append(f"{stage.where}: n = {n} but the {o['split']} split of {run.config['data']['name']} has "
                     f"{available} samples; using all {available}")
        n = available
    for method in o["methods"]:
        res = embed_run(run, layer=",".join(o["layers"]), method=method, n=n, split=o["split"], seed=o["seed"])
        paths += [p for key, p in res.paths.items() if key in ("html", "png")]
        for m in res.maps:
            knn = m.quality.get("knn_accuracy")
            parts.append(f"{m.layer} {method}: 10-NN accuracy {knn:.3f}" if knn is not None else f"{m.layer} {method}")
    return StageResult(stage, "; ".join(parts), paths, notes)
