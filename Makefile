# The two commands: `make run` (embedded stack) and `make test` (whole suite). Both create .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench bench-flash-sale bench-http bench-forecast clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m workers.devstack

# Two processes (pytest-xdist), each with a stack of its own; a test file stays in one (its module fixtures).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# lint-imports: the layering contracts of pyproject.toml (tests/unit/test_layers.py runs them under `make test` too)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# The engine against the floor (orders.py), then the flash sale over HTTP with 1 and 3 workers (flash_sale.py)
bench: $(STAMP)
	$(BIN)/python bench/orders.py
	$(BIN)/python bench/flash_sale.py

# 1,000 orders POSTed over 10 s, with 1 and then 3 worker processes, against the floor at the same rate
bench-flash-sale: $(STAMP)
	$(BIN)/python bench/flash_sale.py

# POST /v1/orders through `python -m workers.api`: steady and burst intake latency, then exactly-once in visibility
bench-http: $(STAMP)
	$(BIN)/python bench/http_intake.py

# The demand models against seasonal-naive on pmdarima's electricity series (docs/performance.md, Forecast backtest)
bench-forecast: $(STAMP)
	$(BIN)/python bench/forecast_backtest.py

clean:
	rm -rf var

.PHONY: record-histories
# Record the history of each order path that has no file yet into tests/replay/histories/ (never overwrites).
record-histories: $(STAMP)
	$(BIN)/python -m tests.replay.record
