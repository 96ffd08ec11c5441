# Two set-up commands (see README): `make demo` and `make test`. Each creates .venv when missing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test test-slow test-min install clean bench

$(BIN)/mlplab: pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/install.sh
	@touch $@

install: $(BIN)/mlplab

demo: install
	@scripts/system-deps.sh
	$(BIN)/mlplab run experiments/notebook.toml --out runs/notebook --overwrite

# make test: everything but the tests marked slow (under 10 minutes on 2 cores); make test-slow: those (real
# Fashion-MNIST accuracy in fp32, bf16 and experiments/best.toml, twenty kill -9s; about 4 minutes). CI runs both.
test: install
	@WITH_CHROMIUM=1 scripts/system-deps.sh
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: install
	@WITH_CHROMIUM=1 scripts/system-deps.sh
	$(BIN)/python -m pytest -q -m slow

# The tests against the lowest version of every dependency that pyproject.toml declares, in a separate venv
# (torch stays the CPU build that install.sh pins). TESTS picks test files: make test-min TESTS=tests/test_report.py
MIN_VENV ?= .venv-min
TESTS ?=
test-min:
	@mkdir -p $(MIN_VENV)
	$(PYTHON) scripts/min_constraints.py > $(MIN_VENV)/constraints.txt
	PIP_CONSTRAINT=$(CURDIR)/$(MIN_VENV)/constraints.txt PYTHON=$(PYTHON) VENV=$(MIN_VENV) scripts/install.sh
	$(MIN_VENV)/bin/python -m pip freeze --exclude-editable > $(MIN_VENV)/installed.txt
	$(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider $(TESTS)

bench: install
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) $(MIN_VENV) runs .pytest_cache
