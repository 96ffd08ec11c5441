"""Fuzzing in CI: every target of fuzz_targets.py with a modest number of hypothesis cases.

benchmarks/fuzz.py runs the same targets with >= 5,000 cases each and prints the table in docs/RELIABILITY.md.
Targets that train or write whole reports get fewer cases here, to keep the suite quick on two cores.
"""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_targets

CI_CASES = {
    "model spec": 200, "experiment TOML": 200, "train --config TOML": 200, "IDX reader": 200, "NPZ reader": 200,
    "CSV reader": 200, "image-folder reader": 100, "predict images": 200, "train flags (CLI)": 25,
    "run dir (library)": 100, "run dir (evaluate/summary/resume/predict)": 40, "run dir (report)": 4,
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("name", list(fuzz_targets.TARGETS))
def test_fuzz_target(name, base):
    target = fuzz_targets.TARGETS[name]

    @settings(max_examples=CI_CASES[name], deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(st.data())
    def run(data):
        tmp = fuzz_targets.fresh_dir(base)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # garbage in on purpose: Pillow and numpy warn about it
                target(data, tmp)
        finally:
            fuzz_targets.cleanup(tmp)

    run()


def test_every_target_has_a_ci_count():
    assert set(CI_CASES) == set(fuzz_targets.TARGETS)
