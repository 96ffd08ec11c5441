"""Fuzz every input mlplab reads with hypothesis and count uncaught exceptions.

    .venv/bin/python benchmarks/fuzz.py                  # >= 5,000 cases per target (takes a while)
    .venv/bin/python benchmarks/fuzz.py --cases 200 --only "IDX reader" --only "NPZ reader"

Targets live in tests/fuzz_targets.py (CI runs the same ones with fewer cases, in tests/test_fuzz.py). An
"uncaught" case is any exception other than MlplabError from the library, or a CLI call that does not end
with exit code 0 or 2 and at most one line on stderr. Prints a table target / cases / uncaught / seconds and
the first failing input of each target; exits 1 if any target had an uncaught case.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fuzz_targets  # noqa: E402


def fuzz(name: str, target, cases: int, base: Path, seed: int) -> dict:
    stats = {"cases": 0, "uncaught": 0, "seen": set(), "failures": []}

    @settings(max_examples=cases, database=None, deadline=None, derandomize=False, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        stats["cases"] += 1
        tmp = fuzz_targets.fresh_dir(base)
        try:
            target(data, tmp)
        except Exception as exc:  # noqa: BLE001  (counting is the point)
            stats["uncaught"] += 1
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            signature = (type(exc).__name__, frame.filename, frame.lineno)
            if signature not in stats["seen"] and len(stats["seen"]) < 8:  # distinct failures, not 1000 copies
                stats["seen"].add(signature)
                stats["failures"].append((f"{type(exc).__name__}: {exc}"[:600],
                                          "".join(traceback.format_exception(exc))[-2500:]))
        finally:
            fuzz_targets.cleanup(tmp)

    from hypothesis import seed as hseed

    hseed(seed)(run)()
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000, help="generated cases per target (default 5000)")
    parser.add_argument("--report-cases", type=int, default=None,
                        help="cases for the 'run dir (report)' target, which writes a whole HTML report per case "
                             "(about a second each; default: --cases)")
    parser.add_argument("--only", action="append", help="run only this target (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        print("\n".join(fuzz_targets.TARGETS))
        return 0
    names = args.only or list(fuzz_targets.TARGETS)
    unknown = [n for n in names if n not in fuzz_targets.TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from {list(fuzz_targets.TARGETS)}")
    warnings.simplefilter("ignore")  # the inputs are garbage on purpose; warnings are not failures
    rows, failures = [], []
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # fsync is free on tmpfs: more cases per second
    with tempfile.TemporaryDirectory(prefix="mlplab-fuzz-", dir=shm) as tmp:
        base = Path(tmp)
        for name in names:
            t0 = time.perf_counter()
            cases = args.report_cases if (name == "run dir (report)" and args.report_cases) else args.cases
            stats = fuzz(name, fuzz_targets.TARGETS[name], cases, base / "cases", args.seed)
            seconds = time.perf_counter() - t0
            rows.append((name, stats["cases"], stats["uncaught"], seconds))
            print(f"{name:45s} {stats['cases']:>7,d} cases {stats['uncaught']:>5d} uncaught {seconds:8.1f}s",
                  flush=True)
            failures += [(name, f) for f in stats["failures"]]
    print()
    print(f"| {'target':45s} | {'cases':>7s} | {'uncaught':>8s} | {'seconds':>8s} |")
    print(f"|{'-' * 47}|{'-' * 9}|{'-' * 10}|{'-' * 10}|")
    for name, cases, uncaught, seconds in rows:
        print(f"| {name:45s} | {cases:>7,d} | {uncaught:>8d} | {seconds:>8.1f} |")
    total = sum(r[1] for r in rows)
    bad = sum(r[2] for r in rows)
    print(f"\n{total:,} cases, {bad} uncaught")
    for name, (message, tb) in failures:
        print(f"\n=== {name}: uncaught\n{message}\n{tb}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
