# Everyday commands. `make demo` trains and evaluates a model on the embedded
# default (SQLite under imgq-data/), classifies the digits as image files with
# `imgq run` and renders the review report; `make test` starts the services
# the tests need and runs the suite.

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
	$(DEMO) export-digits imgq-data/digits
	$(DEMO) run imgq-data/digits --labels-from-dirs
	$(DEMO) report
