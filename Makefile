# Two entry points for a new user (see README):
#   make repro   — set up .venv and run the whole DVC pipeline on the real data (`dvc repro`)
#   make test    — set up .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# dvc.yaml stages call `python -m stages.<name>`: put the venv first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)
STAMP  := $(VENV)/.installed

.PHONY: setup repro test ci-gate bench clean-venv

# Re-installs only when pyproject.toml changes. torch/torchvision come from PyPI (CPU use works;
# the wheel also carries CUDA for machines that have a GPU).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,export]"
	touch $(STAMP)

setup: $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest -q

# CI metric-regression gate: smaller profile of the real data, then compare with the committed reference.
ci-gate: $(STAMP)
	$(BIN)/python -m stages.ci_gate $(CI_GATE_ARGS)

bench: $(STAMP)
	for b in data parse model eval; do $(BIN)/python -m benchmarks.bench_$$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
