# Quick start: `make test` and `make demo`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
AIRFLOW_VERSION ?= 3.3.2
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)

COMPAT_VERSIONS ?= 2.11.2 3.0.6

.PHONY: venv test lint typecheck unit demo bench clean test-compat

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
	$(BIN)/python -m pip install -q apache-airflow-providers-http
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The unit and end-to-end suites on older Airflow versions, each in its own virtual environment.
# Airflow 3.0.x: without its constraints file, today's cadwyn/fastapi/pydantic break its execution API
# (even a plain @task fails in `airflow dags test`), so the versions of its time are pinned.
test-compat:
	@set -e; for v in $(COMPAT_VERSIONS); do \
	  env=.venv-airflow-$$v; \
	  pins=""; \
	  case $$v in 3.0.*) pins="cadwyn<6 fastapi<0.117 pydantic<2.12 starlette<0.48";; esac; \
	  if [ ! -f $$env/.installed ]; then \
	    $(PYTHON) -m venv $$env && $$env/bin/python -m pip install -q --upgrade pip && \
	    $$env/bin/python -m pip install -q "apache-airflow==$$v" -e ".[test]" $$pins && touch $$env/.installed; \
	  fi; \
	  echo "== Airflow $$v"; \
	  start=$$(date +%s); \
	  $$env/bin/python -m pytest -q tests; \
	  echo "== Airflow $$v: suite took $$(( $$(date +%s) - start )) s"; \
	done

clean:
	rm -rf $(VENV) .venv-airflow-* .mypy_cache .ruff_cache build *.egg-info
