"""The shape a newcomer can read: no source file over 600 lines, no function over 60 (docs/design.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("src/common", "workflows", "activities", "workers", "sandbox")
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    files = [p for root in SOURCE_ROOTS for p in sorted((ROOT / root).rglob("*.py"))]
    # Alembic revisions are written once and never edited: their length is the schema's.
    return [p for p in files if "migrations" not in p.parts]


def test_no_source_file_is_long() -> None:
    long = [
        f"{path.relative_to(ROOT)} ({lines} lines)"
        for path in _sources()
        if (lines := path.read_text().count("\n")) > MAX_FILE_LINES
    ]
    assert not long, "source files over 600 lines (split them by what they do):\n" + "\n".join(long)


def test_no_function_is_long() -> None:
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)
