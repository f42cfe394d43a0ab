# Everyday commands. `make demo` trains and evaluates a model on the embedded
# default (SQLite under imgq-data/); `make test` starts the services the tests
# need and runs the suite.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO := IMGQ_DATA_DIR=imgq-data $(BIN)/imgq

.PHONY: install services test lint demo

install:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet --disable-pip-version-check \
		-e '.[dev]'

services:
	bash .ci/services

test: services
	$(BIN)/pytest -q -rfE

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: install
	$(DEMO) db upgrade
	$(DEMO) train --dataset digits --arch cnn
	$(DEMO) evaluate
