"""`fulfill` as a person meets it, in an 80-column terminal, through typer's CliRunner: the database-only
commands on a temporary SQLite file with the demo catalogue; the commands that ask the engine get a stand-in
API that answers with fixed views (what the engine says is tested elsewhere; here it is how it reads)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from common.api import FulfillmentApi, OrderSummary
from common.config import get_settings
from common.demo import seed_demo
from common.models import (
    OrderLine,
    OrderStatus,
    OrderView,
    ParcelView,
    ReturnSummary,
    ShippingSpeed,
    TimelineEntry,
)
from common.store import Store
from common.warehouse.contracts import PickTask
from workers.cli import app

WIDTH = 80
AT = datetime(2026, 12, 1, 8, 51, 52, 160000, tzinfo=UTC)


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A SQLite file with the demo catalogue and stock; the CLI pointed at it, at 80 columns."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'fulfill.db'}"
    monkeypatch.setenv("FULFILL_DATABASE_URL", url)
    monkeypatch.setenv("FULFILL_VAR_DIR", str(tmp_path / "var"))  # no running stack to follow
    monkeypatch.setenv("FULFILL_SMTP_PORT", "1")  # no relay: low-stock emails stay pending
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    get_settings.cache_clear()

    async def seed() -> None:
        async with await Store.open(url) as store:
            await seed_demo(store)

    asyncio.run(seed())
    yield url
    get_settings.cache_clear()


def fulfill(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def ok(result: Any) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return str(result.stdout)


def assert_readable(output: str, *whole: str) -> None:
    """Every line fits 80 columns and each of `whole` (an id, a SKU, a time...) is on one line, uncut."""
    lines = output.splitlines()
    assert all(len(line) <= WIDTH for line in lines), "\n".join(line for line in lines if len(line) > WIDTH)
    assert "…" not in output, output
    for text in whole:
        assert any(text in line for line in lines), f"{text!r} is cut or wrapped:\n{output}"


# ---------------------------------------------------------------------------------------------------------
# A stand-in for the engine's API: fixed views, as the workflows would answer


def line(sku: str, quantity: int = 1) -> OrderLine:
    return OrderLine(sku=sku, quantity=quantity)


def split_order_view(**changes: Any) -> OrderView:
    """A two-parcel order, delivered, with a refunded return and an exchange."""
    view = OrderView(
        order_id="ORD-RET-7",
        status=OrderStatus.RETURN_IN_TRANSIT,
        customer_id="C-42",
        lines=[line("BOOK-ADA", 2), line("POSTER-A2")],
        shipping_speed=ShippingSpeed.STANDARD,
        warehouse="NYC-1",
        pick_task_id="PICK-ORD-RET-7-2",
        carrier="SandboxPost",
        service="ground",
        tracking_number="SBX0000000000000002",
        tracking_url="http://127.0.0.1:8026/track/SBX0000000000000002",
        shipments=[
            ParcelView(
                shipment_no=1,
                warehouse="LDN-1",
                lines=[line("BOOK-ADA", 2)],
                status=OrderStatus.DELIVERED,
                pick_task_id="PICK-ORD-RET-7-1",
                carrier="SandboxPost",
                service="ground",
                tracking_number="SBX0000000000000001",
                tracking_url="http://127.0.0.1:8026/track/SBX0000000000000001",
                estimated_delivery=AT,
            ),
            ParcelView(
                shipment_no=2,
                warehouse="NYC-1",
                lines=[line("POSTER-A2")],
                status=OrderStatus.OUT_FOR_DELIVERY,
                pick_task_id="PICK-ORD-RET-7-2",
                carrier="SandboxPost",
                service="ground",
                tracking_number="SBX0000000000000002",
                tracking_url="http://127.0.0.1:8026/track/SBX0000000000000002",
            ),
        ],
        timeline=[
            TimelineEntry(at=AT, status=OrderStatus.RECEIVED, note="order received"),
            TimelineEntry(
                at=AT,
                status=OrderStatus.DELIVERY_EXCEPTION,
                note="[ops] carrier reports the parcel damaged in transit; waiting for ops to reship or refund it",
            ),
            TimelineEntry(at=AT, status=OrderStatus.RETURN_IN_TRANSIT, note="return RMA-ORD-RET-7-1 sent"),
        ],
        returns=[
            ReturnSummary(
                rma_id="RMA-ORD-RET-7-1",
                status="REFUND_FAILED",
                reason="not_as_described",
                lines=[line("BOOK-ADA")],
                requested_at=AT,
                tracking_number="SBX0000000000000003",
                refund_cents=2500,
                note="the gateway declined the refund: charge disputed",
            ),
            ReturnSummary(
                rma_id="RMA-ORD-RET-7-2",
                status="EXCHANGED",
                reason="wrong_item",
                lines=[line("POSTER-A2")],
                requested_at=AT,
                exchange=True,
                replacement_order_id="ORD-RET-7-X1",
                tracking_number="SBX0000000000000004",
            ),
        ],
    )
    return view.model_copy(update=changes)


PICKS = [
    PickTask(
        id="PICK-ORD-RET-7-2",
        order_id="ORD-RET-7",
        parcel_no=1,
        warehouse="NYC-1",
        lines=[("POSTER-A2", 1), ("BOOK-ADA", 2)],
        status="open",
        created_at=datetime(2026, 12, 1, 8, 51, 52, 160000),  # naive, as SQLite gives it back
        confirmed_at=None,
    )
]

ORDERS = [
    OrderSummary(
        order_id="ORD-RET-7",
        status="RETURN_IN_TRANSIT",
        customer_id="C-42",
        started_at=AT,
        closed_at=None,
    )
]


class StandInApi:
    """What the commands ask of `FulfillmentApi`, answered with fixed views."""

    def __init__(self, view: OrderView) -> None:
        self.view = view

    async def __aenter__(self) -> StandInApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def order_status(self, order_id: str) -> OrderView:
        return self.view

    async def cancel_order(self, order_id: str, reason: str, *, by: str | None = None) -> OrderView:
        return self.view

    async def request_return(self, order_id: str, lines: Any, reason: str, **kwargs: Any) -> OrderView:
        return self.view

    async def open_picks(self) -> list[PickTask]:
        return PICKS

    async def list_orders(self, status: OrderStatus | None = None) -> list[OrderSummary]:
        return ORDERS


@pytest.fixture
def engine(shop: str, monkeypatch: pytest.MonkeyPatch) -> StandInApi:
    """The commands' API connection answers with `split_order_view()` (set `engine.view` for another)."""
    api = StandInApi(split_order_view())

    async def connect(cls: type, settings: Any, **kwargs: Any) -> StandInApi:
        return api

    monkeypatch.setattr(FulfillmentApi, "connect", classmethod(connect))
    return api
