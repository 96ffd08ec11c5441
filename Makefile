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
	$(BIN)/mlplab train --data fashion-mnist --model 512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax \
		--optimizer sgd --lr 0.1 --momentum 0.9 --epochs 3 --batch-size 128 --val-split 0.1 --seed 0 \
		--out runs/demo --overwrite

test: install
	@WITH_CHROMIUM=1 scripts/system-deps.sh
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
