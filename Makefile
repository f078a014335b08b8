# Two entry points for a new user (see README):
#   make repro   — set up .venv and run the whole DVC pipeline on the real data (`dvc repro`)
#   make test    — set up .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# dvc.yaml stages call `python -m stages.<name>`: put the venv first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)
STAMP  := $(VENV)/.installed

.PHONY: setup repro test ci-gate bench gpu-check clean-venv

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

# Seed / ablation grid with DVC's queue (README "OGFR's mechanism"): one experiment per seed, METHOD's defaults
# plus SET's -S overrides, TAG in the run name; JOBS workers (2 cores: 2 runs of 1 torch thread).
#   make seeds METHOD=ogfr SEEDS="0 1 2"            then, when `dvc queue status` shows them done:
#   make record-seeds                                 (finished t-* experiments -> reports/seed_runs.json)
#   make seeds METHOD=ogfr TAG=kd-off SET="train.threads=1 train.model.kd=false"
METHOD ?= ogfr
SEEDS  ?= 0 1 2
JOBS   ?= 2
TAG    ?=
SET    ?= train.threads=1
.PHONY: seeds record-seeds
seeds: $(STAMP)
	$(BIN)/python -m ogfr_core.report.seed_runs queue --method $(METHOD) --seeds $(SEEDS) \
		$(if $(TAG),--tag $(TAG)) $(foreach s,$(SET),--set $(s)) --jobs $(JOBS) --start

record-seeds: $(STAMP)
	$(BIN)/python -m ogfr_core.report.seed_runs record

bench: $(STAMP)
	for b in data parse model eval; do $(BIN)/python -m benchmarks.bench_$$b || exit 1; done

# GPU acceptance check (benchmarks/gpu_check.py, README "GPU acceptance check"): the set-up (venv +
# install; ~0 s when already installed) is timed here and recorded apart from the check's own time.
# Without CUDA: `make gpu-check GPU_CHECK_ARGS=--dry-run` (what .ci/run does).
gpu-check:
	@t0=$$(date +%s.%N); \
	if $(MAKE) --no-print-directory -q setup; then note="already installed: nothing to do"; \
	else note="python -m venv $(VENV) + pip install -e .[dev]"; fi; \
	$(MAKE) --no-print-directory setup || exit 1; \
	t1=$$(date +%s.%N); \
	$(BIN)/python -m benchmarks.gpu_check --setup-seconds "$$(awk "BEGIN {print $$t1 - $$t0}")" \
	  --setup-note "make setup: $$note" $(GPU_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV)
