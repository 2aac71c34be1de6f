# cvit-bench: `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= python3.11
VENV ?= .venv
# On CPU machines torch is installed first from this spec (a CPU build); override for CUDA:
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=
# pytest-xdist workers: every core by default (PYTEST_WORKERS=0 runs in one process). --dist loadscope keeps each
# test module on one worker, so a module's expensive fixture (the demo pipeline, a trained run) is built once,
# not once per worker.
PYTEST_WORKERS ?= auto

.PHONY: demo test venv browser postgres clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[all,test]"
	touch $(STAMP)

venv: $(STAMP)

# Debian's Chromium for the browser tests (Playwright drives the system binary; nothing is downloaded).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  echo "warning: could not install chromium; browser tests will fail"

# Debian's PostgreSQL for the server's PostgreSQL round (the test starts its own throwaway cluster; no service runs).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) || \
	  echo "warning: could not install postgresql; the PostgreSQL test will skip (fail under CI=true)"

demo: $(STAMP)
	$(BIN)/cvit-bench demo --out $(DEMO_OUT)

test: $(STAMP) browser postgres
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/scoring.py

# The documentation site: the docs extra once (its own stamp), then a strict build into site/.
DOCS_STAMP := $(VENV)/.docs-installed
.PHONY: docs

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) demo-out .pytest_cache site
