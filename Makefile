# The two commands of the README: `make repro` (the pipeline) and `make test` (the suite). Both set up .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# No telemetry, ever (it also fails noisily offline).
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Python keeps what it compiles (.pyc): with PYTHONDONTWRITEBYTECODE set, as some CI images and containers set it, every
# process compiled every module it imported from source again — `clpau validate` 9.3 s instead of 3.8, importing
# Lightning Fabric 6.7 s instead of 2.8 (docs/performance.md, `make test`)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: venv repro test lint bench clean compare serve pool
venv: $(STAMP)

# Reinstalls only when the pins or the package metadata change. --no-compile: pip byte-compiles every module of the
# 2.5 GB stack otherwise (the install took 121 s with it, 67 s without, pip's cache warm); Python compiles what is
# imported instead, once.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile -r requirements.lock 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(BIN)/pip install -q --no-deps -e . 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(BIN)/pip check
	touch $@

# data/pool (accepted batches, versioned by data/pool.dvc) starts with its README only; with batches in it, `dvc pull`
# it first. The README keeps the folder from being empty (DVC warns of an empty dependency once per stage and check).
POOL_README := Accepted video batches, one folder each (videos/, clips/, batch.json), moved here by the ingest flow and versioned by data/pool.dvc (docs/operations.md).
repro: venv pool
	$(BIN)/dvc repro

pool:
	mkdir -p data/pool
	test -e data/pool/README.txt || echo "$(POOL_README)" > data/pool/README.txt

# The suite runs in one pytest-xdist process per usable CPU (the affinity mask and cgroup quota, at most 4: each
# process builds its own fixtures), a test module in one process (tests/conftest.py). TEST_WORKERS=0: in this
# process only.
TEST_WORKERS ?= $(shell $(BIN)/python -c "from clpau.core.hardware import usable_cpus; print(min(4, usable_cpus()))")
test: venv
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: venv
	$(BIN)/ruff check src tests bench flows

bench: venv
	$(BIN)/python bench/extract.py --naive
	$(BIN)/python -W ignore bench/synth.py
	$(BIN)/python bench/pretrain.py
	$(BIN)/python -W ignore bench/drift.py

clean:
	rm -rf $(VENV) .pytest_cache

# Every pretraining method as a DVC experiment (pretrain + evaluate), each in a temporary copy of the workspace (so
# the workspace is left as it is), then one table: `dvc exp show` columns and reports/compare.md (per-AU F1 too).
# `dvc exp run` starts from HEAD: commit first, and do not commit while it runs. Without --force, stages whose inputs
# did not change (assets, synth, extraction) are restored, not rerun. Longer training for every method:
#   make compare COMPARE_SET="-S pretrain.max_steps=1500"
# Every method once per pretraining seed (SEEDS="0 1 2": mean ± std over seeds in the table):
#   make compare METHODS="simclr moco clp" SEEDS="0 1 2" COMPARE_SET="-S pretrain.max_steps=1500"
METHODS ?= random simclr moco tcl cir clp supervised
SEEDS ?= 0
COMPARE_SET ?=
compare: repro
	for m in $(METHODS); do for s in $(SEEDS); do \
	  $(BIN)/dvc exp remove -q cmp-$$m-s$$s 2>/dev/null || true; \
	  $(BIN)/dvc exp run --temp -n cmp-$$m-s$$s -S pretrain.method=$$m -S pretrain.seed=$$s $(COMPARE_SET); \
	done; done
	$(BIN)/dvc exp show --no-pager --drop '.*' \
	  --keep 'Experiment|Created|pretrain.method|pretrain.seed|f1_mean|f1_std|identity_leakage|same_subject_nn|cross_subject_knn_f1|subject_variance_share|encoder_step'
	$(BIN)/clpau compare --out reports/compare.md

# A local Prefect server (127.0.0.1 only), both work pools (clpau-process: ingest; gpu: retraining), the
# deployments of prefect.yaml (ingest-nightly, ingest-release, retrain-weekly) and a worker per pool. On a separate training machine run only the gpu worker there.
# UI: http://127.0.0.1:4200 . Ctrl-C stops worker and server.
PREFECT_PORT ?= 4200
serve: venv
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT) & server=$$!; \
	trap "kill $$server" EXIT; \
	export PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api; \
	for i in $$(seq 120); do curl -sf $$PREFECT_API_URL/health >/dev/null && break; sleep 1; done; \
	for pool in clpau-process gpu; do $(BIN)/prefect work-pool inspect $$pool >/dev/null 2>&1 || \
	  $(BIN)/prefect work-pool create $$pool --type process; done; \
	$(BIN)/prefect --no-prompt deploy --all; \
	$(BIN)/prefect worker start --pool gpu & gpu_worker=$$!; trap "kill $$server $$gpu_worker" EXIT; \
	$(BIN)/prefect worker start --pool clpau-process
