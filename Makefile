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

.PHONY: install run test test-fast bench ui check list

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

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/run.py

check: $(STAMP)
	nasflow check

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
