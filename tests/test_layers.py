"""The layers point down only: every import in src/mlplab, at module level or inside a function, is checked.

errors/atomic < data < model < train, inspect < viz < runs < cli. `train` and `inspect` are siblings and do
not import each other. The package's own `__init__` is the public facade: it resolves names lazily by
string (importlib), so it has no static imports to check beyond `errors`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mlplab"

LAYERS = {
    "base": 0,
    "data": 1,
    "model": 2,
    "train": 3, "inspect": 3,
    "viz": 4,
    "runs": 5,
    "cli": 6,
}
# top-level modules and the layer they sit in
TOP_LEVEL = {"errors": "base", "atomic": "base", "__main__": "cli"}
# the facade's plain values that any layer may read (`from mlplab import __version__`)
FACADE_VALUES = {"__version__"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer_of(module: str) -> str | None:
    """The layer a dotted mlplab module belongs to (None for the package facade itself)."""
    parts = module.split(".")
    if parts[0] != "mlplab":
        return None
    if len(parts) == 1:
        return None
    return TOP_LEVEL.get(parts[1], parts[1])


def _imports(path: Path):
    """(line, imported mlplab module) for every import statement in the file, however deeply nested."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mlplab" and alias.name != "mlplab":  # `import mlplab`: the facade
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "mlplab":
                continue
            if target == "mlplab":  # `from mlplab import x`: x may be a subpackage or a facade value
                for alias in node.names:
                    if alias.name not in FACADE_VALUES:
                        yield node.lineno, f"mlplab.{alias.name}"
            else:
                yield node.lineno, target


def _violations() -> list[str]:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        me = _module_name(path)
        my_layer = _layer_of(me)
        if my_layer is None:
            continue  # the facade
        if my_layer not in LAYERS:
            problems.append(f"{path.relative_to(SRC.parent)}: module {me} is in no layer; add it to LAYERS")
            continue
        for line, target in _imports(path):
            their_layer = _layer_of(target)
            where = f"{path.relative_to(SRC.parent)}:{line}"
            if their_layer is None:
                problems.append(f"{where}: imports the package facade `mlplab` (import the defining module)")
                continue
            if their_layer not in LAYERS:
                problems.append(f"{where}: imports {target}, which is in no layer")
                continue
            if their_layer == my_layer:
                continue
            if LAYERS[their_layer] > LAYERS[my_layer]:
                problems.append(f"{where}: {my_layer} imports {target} from the higher layer {their_layer}")
            elif LAYERS[their_layer] == LAYERS[my_layer]:
                problems.append(f"{where}: {my_layer} imports its sibling layer {their_layer} ({target})")
    return problems


def test_imports_point_down_the_layers():
    problems = _violations()
    assert problems == [], "imports against the layers:\n" + "\n".join(problems)


def test_every_source_module_is_in_a_layer():
    layers = {_layer_of(_module_name(p)) for p in SRC.rglob("*.py")} - {None}
    assert layers <= set(LAYERS), layers - set(LAYERS)


@pytest.mark.parametrize("source, target, expected", [
    ("model/engine.py", "mlplab.runs.folder", "higher layer runs"),
    ("train/trainer.py", "mlplab.inspect.embed", "sibling layer inspect"),
    ("viz/report.py", "mlplab.cli", "higher layer cli"),
])
def test_the_check_catches_an_upward_import(tmp_path, monkeypatch, source, target, expected):
    """The walker must see imports inside functions too: plant one in a copy of the tree and expect it named."""
    import shutil

    tree = tmp_path / "mlplab"
    shutil.copytree(SRC, tree, ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    planted = tree / source
    planted.write_text(planted.read_text(encoding="utf-8")
                       + f"\n\ndef _planted():\n    from {target} import something  # noqa\n", encoding="utf-8")
    monkeypatch.setattr(__import__(__name__), "SRC", tree)
    problems = _violations()
    assert len(problems) == 1 and expected in problems[0] and source in problems[0], problems
