# compoundry — the README's two commands are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-unit up down status bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0   # the CPU build first, so nothing pulls a CUDA build
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install compoundry with its dev extras

up: $(STAMP)  ## start MLflow, Prefect (UI), the flow server and the Prediction Service
	$(BIN)/compoundry up

down:  ## stop everything `up` started, Bento replicas included
	@if [ -x $(BIN)/compoundry ]; then $(BIN)/compoundry down; fi

status: $(STAMP)
	$(BIN)/compoundry status

demo: up  ## the main journey: register models → webhook → Prefect deploys → ask the pipeline
	$(BIN)/compoundry demo

test: $(STAMP)  ## unit + integration tests (starts and stops every server it needs)
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

bench: $(STAMP)  ## benchmarks; results in bench/results/ and docs/benchmarks.md (gateway.py needs nginx, wrk, node)
	$(BIN)/python bench/registration_to_serving.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/coldstart.py
	$(BIN)/python bench/sim.py

clean: down
	rm -rf .compoundry
