"""Print a pip constraints file that pins every dependency in pyproject.toml to its declared lower bound.

`make test-min` installs with it, so the tests run against the oldest versions the package claims to support
(scikit-learn's CI does the same): a lower bound that the code has outgrown fails there, not on a user's machine.
torch is left out: its lowest usable build here is the CPU wheel that scripts/install.sh pins.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SKIP = {"torch"}
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(?:;\s*(.+))?$")


def lower_bounds(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    pins = []
    for req in requirements:
        m = REQUIREMENT.match(req)
        if m is None:
            raise SystemExit(f"min_constraints: no '>=' lower bound in {req!r}; every dependency needs one")
        name, version, marker = m.groups()
        if name.lower() not in SKIP:
            pins.append(f"{name}=={version}" + (f"; {marker}" if marker else ""))
    return pins


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    sys.stdout.write("".join(line + "\n" for line in lower_bounds(root / "pyproject.toml")))
