# Two set-up commands (see README): `make demo` and `make test`. Each creates .venv when missing.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test install clean bench

$(BIN)/mlplab: pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/install.sh
	@touch $@

install: $(BIN)/mlplab

demo: install
	@scripts/system-deps.sh
	$(BIN)/mlplab run experiments/notebook.toml --out runs/notebook --overwrite

test: install
	@WITH_CHROMIUM=1 scripts/system-deps.sh
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
