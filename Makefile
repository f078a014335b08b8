# Two entry points for a new user (see README):
#   make repro   — set up .venv and run the whole DVC pipeline on the real data (`dvc repro`)
#   make test    — set up .venv and run the test suite
# and, to share the expensive outputs through the DVC remote (.dvc/config; README "Sharing the cache"):
#   make push    — dvc push --run-cache (after make repro)     make pull — dvc pull --run-cache
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# dvc.yaml stages call `python -m stages.<name>`: put the venv first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)
STAMP  := $(VENV)/.installed

.PHONY: setup repro test ci-gate bench gpu-check clean-venv push pull lock

# Installs the pinned environment (requirements.lock: every package of `.[dev,export]` at one version,
# compiled by pip-tools for CPython 3.11 on Linux x86_64), then the project itself without
# dependencies. Re-installs only when the lock or pyproject.toml changes. torch/torchvision come from
# PyPI (CPU use works; the wheel also carries CUDA for machines that have a GPU).
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

# The DVC remote (default: ../ogfr-dvc-store beside the repository; ogfr_core/remote.py): push the
# cached outputs and the run cache; pull them (what the remote lacks is listed as stages to rerun).
# A missing / read-only local remote: one ERROR line, exit 1, nothing written.
push: $(STAMP)
	$(BIN)/python -m ogfr_core.remote push

pull: $(STAMP)
	$(BIN)/python -m ogfr_core.remote pull

# Refresh requirements.lock (pip-tools in its own venv, .lock-venv/; never in .venv). Keeps the current
# pins where they still satisfy pyproject.toml + lock-constraints.txt; `make lock LOCK_ARGS=--upgrade`
# moves everything to the newest allowed release (then re-measure). Commit the lock with the change.
LOCK_VENV := .lock-venv
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/python -m pip install -q "pip-tools==7.7.0"; }
	$(LOCK_VENV)/bin/pip-compile -q --extra dev --extra export --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links -c lock-constraints.txt $(LOCK_ARGS) \
	  -o requirements.lock pyproject.toml

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
