"""Checks of the arguments stores take, before any transaction: bad input raises ValueError with a clear
message and changes nothing."""

from __future__ import annotations

from collections.abc import Sequence


def require_text(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def require_int(what: str, value: object, *, minimum: int) -> int:
    # bool is an int subclass; True units of stock is a bug, not a quantity.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{what} must be {bound}, got {value}")
    return value


def normalize_lines(lines: Sequence[tuple[str, int]], *, merge: bool) -> list[tuple[str, int]]:
    """(sku, quantity) lines sorted by sku; with `merge`, a repeated sku's quantities are summed, else refused."""
    if isinstance(lines, str | bytes) or not lines:
        raise ValueError("at least one (sku, quantity) line is required")
    out: dict[str, int] = {}
    for line in lines:
        sku, qty = line
        require_text("sku", sku)
        require_int(f"quantity of {sku}", qty, minimum=1)
        if sku in out and not merge:
            raise ValueError(f"sku {sku!r} appears more than once")
        out[sku] = out.get(sku, 0) + qty
    return sorted(out.items())
