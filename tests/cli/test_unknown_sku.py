"""Finding 8: an unknown SKU (or warehouse) gets the same answer from every command: a clear error on
stderr, exit code 2, nothing printed on stdout."""

from __future__ import annotations

import pytest

from tests.cli.conftest import fulfill

UNKNOWN_SKU = [
    ["inventory", "show", "--sku", "NOSUCH"],
    ["inventory", "show", "--sku", "NOSUCH", "--json"],
    ["inventory", "incoming", "--sku", "NOSUCH"],
    ["inventory", "forecast", "--sku", "NOSUCH"],
    ["inventory", "history", "NOSUCH"],
    ["inventory", "count", "NOSUCH", "--warehouse", "LDN-1", "--counted", "3"],
    ["inventory", "adjust", "NOSUCH", "2", "--warehouse", "LDN-1", "--reason", "found"],
    ["inventory", "expect", "NOSUCH", "2", "--warehouse", "LDN-1"],
    ["inventory", "reorder-point", "NOSUCH", "5", "--warehouse", "LDN-1"],
]


@pytest.mark.usefixtures("shop")
@pytest.mark.parametrize("args", UNKNOWN_SKU, ids=lambda a: " ".join(a[:2]) + (" --json" if "--json" in a else ""))
def test_unknown_sku_is_bad_input_everywhere(args: list[str]) -> None:
    result = fulfill(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "unknown SKU 'NOSUCH': not in the product catalogue" in result.stderr
    assert result.stdout == ""


@pytest.mark.usefixtures("shop")
@pytest.mark.parametrize(
    "args",
    [
        ["inventory", "show", "--warehouse", "MARS-1"],
        ["inventory", "incoming", "--warehouse", "MARS-1"],
        ["inventory", "forecast", "--warehouse", "MARS-1"],
        ["inventory", "history", "TEE-M", "--warehouse", "MARS-1"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_unknown_warehouse_is_bad_input_everywhere(args: list[str]) -> None:
    result = fulfill(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "unknown warehouse 'MARS-1' (known: LDN-1, NYC-1)" in result.stderr
    assert result.stdout == ""
