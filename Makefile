# The two commands a newcomer needs:  make run   (set up and run the site)   make test   (run the tests)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint stock-check bench bench-smoke reliability reliability-smoke clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(PY) scripts/dev.py

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The billing wheel installed into a fresh `django-admin startproject` (docs/INSTALL.md), a purchase and a
# spend over HTTP. PostgreSQL: DATABASE_URL's server, database STOCK_CHECK_DB (default stock_check). ~1.5 min.
stock-check: $(VENV)/.installed
	$(PY) scripts/stock_project_check.py

# Benchmarks on PostgreSQL (BENCH_DATABASE_URL, default: DATABASE_URL's server, database <name>_bench,
# dropped and re-created). Full run: about 15 minutes, writes docs/BENCHMARKS.md. Smoke: seconds, for CI.
bench: $(VENV)/.installed
	$(PY) -m bench

bench-smoke: $(VENV)/.installed
	$(PY) -m bench --smoke

# Reliability and security suite on PostgreSQL (DATABASE_URL's server; its own rel_* databases), gunicorn and
# localstripe on loopback. Full run: about 15 minutes, rewrites docs/RELIABILITY.md. Smoke: under a minute, for CI.
reliability: $(VENV)/.installed
	$(PY) -m reliability --full

reliability-smoke: $(VENV)/.installed
	$(PY) -m reliability --smoke

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles .pytest_cache
