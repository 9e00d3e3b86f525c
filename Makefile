# Quick start: `make test` and `make demo`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
AIRFLOW_VERSION ?= 3.3.2
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)

.PHONY: venv test lint typecheck unit demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q "apache-airflow==$(AIRFLOW_VERSION)" -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check airflow_provider_multimarkets tests example_dags bench scripts
	$(BIN)/ruff format --check airflow_provider_multimarkets tests example_dags bench scripts

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest -q tests

test: lint typecheck unit

demo: venv
	$(BIN)/python scripts/demo.py

bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build *.egg-info
