# The two commands: `make run` (embedded stack) and `make test` (whole suite). Both create .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench bench-http bench-forecast clean

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

bench: $(STAMP)
	$(BIN)/python bench/orders.py

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
