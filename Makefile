# Quick start: `make test` and `make demo`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
AIRFLOW_VERSION ?= 3.3.2
STAMP := $(VENV)/.installed-$(AIRFLOW_VERSION)

COMPAT_VERSIONS ?= 2.11.2 3.0.6

DEPLOY_STAMP := $(VENV)/.installed-deploy-$(AIRFLOW_VERSION)
DOCS_STAMP := $(VENV)/.installed-docs-$(AIRFLOW_VERSION)

.PHONY: venv docs test lint typecheck unit demo bench clean test-compat test-deploy redis-server chromium postgresql

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q "apache-airflow==$(AIRFLOW_VERSION)" -e ".[sandbox,redis]" --group dev
	touch $(STAMP)

venv: $(STAMP)

# Debian's redis-server: the Redis budget tests and the CeleryExecutor deployment run a real one.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing and cannot be installed here: run 'sudo apt-get install redis-server'"; exit 1; \
	  fi; }

lint: venv
	$(BIN)/ruff check airflow_provider_multimarkets tests example_dags bench scripts deploy docs
	$(BIN)/ruff format --check airflow_provider_multimarkets tests example_dags bench scripts deploy docs

typecheck: venv
	$(BIN)/mypy

unit: venv redis-server
	$(BIN)/python -m pytest -q tests

test: lint typecheck unit

demo: venv
	$(BIN)/python scripts/demo.py

# Debian's chromium: the connection-form test drives the real Airflow UI in it (headless).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is missing and cannot be installed here: run 'sudo apt-get install chromium'"; exit 1; \
	  fi; }

# A real deployment (api-server, scheduler, dag-processor, triggerer, LocalExecutor; then the
# CeleryExecutor with Redis and two workers) driven through its REST API; see deploy/harness.py.
# celery 5.7 removed celery.backends.database.retry, which the Celery provider (3.26) still imports.
$(DEPLOY_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q "apache-airflow==$(AIRFLOW_VERSION)" "apache-airflow-providers-celery>=3.12" "celery[redis]>=5.5,<5.7" "playwright>=1.40" "psycopg2-binary>=2.9" "asyncpg>=0.30"
	touch $(DEPLOY_STAMP)

# Debian's postgresql: the high-availability scenarios run Airflow on a PostgreSQL cluster of their own
# (deploy/harness.py starts it with initdb/pg_ctl, as the postgres user when run as root).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's postgresql"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "postgresql is missing and cannot be installed here: run 'sudo apt-get install postgresql'"; exit 1; \
	  fi; }

test-deploy: $(DEPLOY_STAMP) redis-server chromium postgresql
	@[ -f docs/_build/html/index.html ] || $(MAKE) docs  # deploy/test_docs_site.py reads the built site
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=3000 deploy; rc=$$?; \
	echo "== make test-deploy: wall time $$(( $$(date +%s) - start )) s"; exit $$rc

bench: venv redis-server
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
	    $$env/bin/python -m pip install -q "apache-airflow==$$v" -e ".[sandbox,redis]" --group dev $$pins && touch $$env/.installed; \
	  fi; \
	  echo "== Airflow $$v"; \
	  start=$$(date +%s); \
	  $$env/bin/python -m pytest -q tests; \
	  echo "== Airflow $$v: suite took $$(( $$(date +%s) - start )) s"; \
	done

# The documentation site: Sphinx + MyST, warnings as errors (-W), broken references fail (-n), no network
# (no intersphinx). The connection page is generated from the provider's own field table at build time.
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q --group docs
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	@start=$$(date +%s); \
	rm -rf docs/_build docs/_api docs/_generated; \
	$(BIN)/sphinx-build -W --keep-going -n -q -j 1 -b html docs docs/_build/html; rc=$$?; \
	echo "== make docs: $$(( $$(date +%s) - start )) s, site in docs/_build/html/index.html"; exit $$rc

clean:
	rm -rf $(VENV) .venv-airflow-* .mypy_cache .ruff_cache build *.egg-info docs/_build docs/_api docs/_generated
