# payorch: `make run` serves the API on the embedded default; `make test` runs the whole suite.
# Both create ./.venv and install into it: Python 3.11+ and make are all the set-up there is.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint migrate worker bench clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "payorch needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/payorch serve

worker: $(STAMP)
	$(BIN)/payorch worker

migrate: $(STAMP)
	$(BIN)/payorch migrate

# The browser tests drive Debian's Chromium; installed here when missing (as root, with apt-get).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "the browser tests need Debian's chromium at $(CHROMIUM): apt-get install chromium"; exit 1; fi

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests migrations bench
	$(BIN)/mypy
	$(BIN)/bandit -r src -lll -q
	@if [ -x scripts/lint-ops.sh ]; then PATH="$(CURDIR)/$(BIN):$$PATH" scripts/lint-ops.sh; fi

# The charge API against the floor of its stack (issue 9): needs Postgres and Redis on 127.0.0.1 and
# wrk (installed with apt-get when missing and root). BENCH_ARGS="--workers 2 --duration 20" etc.
bench: $(STAMP)
	$(BIN)/python bench/charges_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .payorch .pytest_cache .mypy_cache .ruff_cache
