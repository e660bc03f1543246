# nasflow: `make run` runs the pipeline on the embedded default, `make test` runs the tests.
# Every target creates .venv and installs the project into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
PREFECT_PORT ?= 4200

export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1

.PHONY: install run test test-kernels test-fast lint bench ui check list deps docs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	@test -d .git || (git init -q && git add -A && git commit -qm "nasflow project" )
	nasflow prepare
	nasflow check
	nasflow pipeline

# Learned controllers and predictors and the DARTS family's contract, run again under torch's portable
# kernels: rounding differs between kernel sets (AVX-512, AVX2, default), and a model that learns only
# under one of them fails here on any machine.
NUMERIC_TESTS := tests/strategies/test_nao.py tests/strategies/test_rl_pnas.py tests/strategies/test_enas.py \
	tests/strategies/test_darts.py tests/contracts/test_strategies.py

test: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-kernels docs

# Ruff's lint rules (pyproject.toml [tool.ruff]); each ignored rule names its reason there.
lint: $(STAMP)
	$(BIN)/ruff check nas_core tasks flows tests bench

test-kernels: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest -q -p no:cacheprovider $(NUMERIC_TESTS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/run.py

check: $(STAMP)
	nasflow check

deps: $(STAMP)
	nasflow deps

# The documentation site, strictly: a warning, a broken link or a missing anchor fails the build
# (not --quiet: it hides the warnings from the strict count).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir $(CURDIR)/site

list: $(STAMP)
	nasflow list

ui: $(STAMP)
	mlflow server --host $(HOST) --port $(MLFLOW_PORT) \
		--backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--artifacts-destination $(CURDIR)/mlruns

# Services for scheduled runs and shared storage, all on $(HOST) (README "Run on a schedule").
POOL ?= nasflow-process
PREFECT_API ?= http://$(HOST):$(PREFECT_PORT)/api

.PHONY: server worker deploy push pull

server: $(STAMP)
	prefect server start --host $(HOST) --port $(PREFECT_PORT)

worker: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API) prefect worker start --pool $(POOL) --type process

deploy: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API) prefect work-pool inspect $(POOL) >/dev/null 2>&1 || \
		PREFECT_API_URL=$(PREFECT_API) prefect work-pool create $(POOL) --type process
	PREFECT_API_URL=$(PREFECT_API) PWD=$(CURDIR) prefect --no-prompt deploy --all

push: $(STAMP)
	dvc push

pull: $(STAMP)
	dvc pull
