"""Bad input at the CLI: a clear error naming the problem, exit code 2, and nothing started or written."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from temporalio.service import RPCError

from common.api import FulfillmentApi
from common.store import Store
from tests.integration.conftest import Cli
from tests.orders import order_dict


def with_change(path: str, value: Any) -> str:
    data = order_dict("ORD-BAD-1")
    *parents, leaf = path.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is DELETE:
        del target[leaf]
    else:
        target[leaf] = value
    return json.dumps(data)


DELETE = object()

CASES = [
    pytest.param('{"order_id": "ORD-BAD-1", "lines": [', "malformed JSON", id="malformed-json"),
    pytest.param(with_change("order_id", DELETE), "order_id: required field is missing", id="missing-order-id"),
    pytest.param(with_change("lines", []), "lines", id="empty-lines"),
    pytest.param(with_change("lines.0.quantity", 0), "lines.0.quantity", id="quantity-zero"),
    pytest.param(with_change("lines.0.quantity", -2), "lines.0.quantity", id="quantity-negative"),
    pytest.param(with_change("lines.0.sku", "NO-SUCH-SKU"), "unknown sku 'NO-SUCH-SKU'", id="unknown-sku"),
    pytest.param(with_change("customer.email", "ada.example.com"), "customer.email", id="invalid-email"),
    pytest.param(with_change("customer.phone", "07700 900123"), "E.164", id="phone-not-e164"),
    pytest.param(with_change("shipping_speed", "warp"), "shipping_speed", id="unknown-speed"),
    pytest.param(with_change("customer.channels", ["email", "fax"]), "customer.channels.1", id="unknown-channel"),
]


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(("body", "expected"), CASES)
async def test_bad_order_is_refused_and_nothing_starts(
    cli: Cli, api: FulfillmentApi, store: Store, body: str, expected: str
) -> None:
    stock_before = await store.stock.stock_levels()
    result = await asyncio.to_thread(cli, "order", "place", "-", input=body)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr
    assert "nothing was started" in result.stderr
    with pytest.raises(RPCError):
        await api.client.get_workflow_handle("order-ORD-BAD-1").describe()
    assert await store.stock.stock_levels() == stock_before


async def test_unreadable_file_is_bad_input(cli: Cli) -> None:
    result = await asyncio.to_thread(cli, "order", "place", "/nonexistent/order.json")
    assert result.returncode == 2
    assert "cannot read /nonexistent/order.json" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["inventory", "receive", "MUG-RED", "0"], "positive"),
        (["inventory", "receive", "MUG-RED", "-5"], "positive"),
        (["inventory", "receive", "NOPE", "5"], "NOPE"),
        (["inventory", "receive", "MUG-RED", "5", "--warehouse", "MARS-1"], "MARS-1"),
        (["warehouse", "confirm", "PICK-DOESNOTEXIST"], "no pick task"),
        (["order", "status", "ORD-NEVER-PLACED"], "no order"),
    ],
)
async def test_bad_ops_commands_change_nothing(cli: Cli, store: Store, args: list[str], expected: str) -> None:
    stock_before = await store.stock.stock_levels()
    result = await asyncio.to_thread(cli, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr
    assert await store.stock.stock_levels() == stock_before
