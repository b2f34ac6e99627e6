"""Every domain store over one Database: `await Store.open(url)` gives `store.catalog`, `store.stock`, ...,
sharing one connection pool and its rules (common.db.database). Share one Store per process."""

from __future__ import annotations

from typing import Self

from common.access.store import ApiKeyStore
from common.catalog.store import CatalogStore
from common.db.database import Database
from common.inventory.backorders import BackorderStore
from common.inventory.purchasing import PurchaseOrderStore
from common.inventory.reservations import ReservationStore
from common.inventory.stock import StockStore
from common.notifications.opt_outs import SmsOptOutStore
from common.notifications.store import NotificationStore
from common.orders.intake_keys import IntakeKeyStore
from common.orders.store import OrderStore
from common.outbox.store import OrderSignalStore
from common.returns.store import ReturnsStore
from common.shipping.store import LabelStore
from common.threepl.store import ThreePLStore
from common.warehouse.counts import StockCountStore
from common.warehouse.store import PickTaskStore
from common.webhooks.store import WebhookEventStore


class Store:
    """The domain stores of one database. Create with `await Store.open(url)`, finish with
    `await store.close()`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.catalog = CatalogStore(db)  # products, warehouses
        self.stock = StockStore(db)  # stock levels, ledger, receipts, returns, imports, reorder points
        self.counts = StockCountStore(db)  # counts and adjustments (they may release orders' parcels)
        self.purchase_orders = PurchaseOrderStore(db)  # incoming stock
        self.reservations = ReservationStore(db)  # stock held for orders' parcels
        self.backorders = BackorderStore(db)  # orders waiting for stock
        self.picks = PickTaskStore(db)  # pick tasks, short picks
        self.labels = LabelStore(db)  # parcels' carrier labels
        self.notifications = NotificationStore(db)  # customer messages' delivery log
        self.sms_opt_outs = SmsOptOutStore(db)  # numbers that texted STOP (or START again)
        self.signals = OrderSignalStore(db)  # the order-signal outbox
        self.orders = OrderStore(db)  # what orders still hold
        self.returns = ReturnsStore(db)  # RMAs, inspections, refunds
        self.api_keys = ApiKeyStore(db)  # who may call the HTTP API
        self.intake_keys = IntakeKeyStore(db)  # Idempotency-Key headers of order intake
        self.webhook_events = WebhookEventStore(db)  # provider webhook events seen (each acted on once)
        self.threepl = ThreePLStore(db)  # parcels handed to 3PLs, and their reconciliation cursors

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Self:
        """Connect to `url` (sqlite+aiosqlite:///path or postgresql+asyncpg://...) and, when `migrate`,
        apply the Alembic migrations up to head first."""
        return cls(await Database.open(url, migrate=migrate))

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        """Raises if the database does not answer a trivial query."""
        await self.db.ping()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
