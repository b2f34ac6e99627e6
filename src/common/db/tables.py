"""SQLAlchemy Core tables: the schema the domain stores read and write.

The Alembic migrations under `migrations/versions` create exactly this schema (a unit test compares them),
so a change here needs a new migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names, so later migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

RESERVATION_STATUSES = ("held", "released", "committed")
# reservation/release/commit: an order's stock; receipt: goods in (purchase order or not); return: goods
# back from a customer (RMA); adjustment: a correction with a reason; count: a cycle count's difference.
# writeoff (0003): returned units inspected as damaged, recorded with zero on-hand delta (ref: the RMA).
LEDGER_KINDS = ("receipt", "reservation", "release", "commit", "adjustment", "count", "return", "writeoff")
PURCHASE_ORDER_STATUSES = ("open", "received", "cancelled")
PICK_TASK_STATUSES = ("open", "confirmed", "cancelled")
SHIPMENT_STATUSES = ("created", "purchased", "voided")
NOTIFICATION_STATUSES = ("sending", "sent", "failed")
ORDER_SIGNAL_KINDS = ("signal", "update")
WAREHOUSE_KINDS = ("own", "3pl")  # (0009) own: our staff pick, we buy the label; 3pl: a provider does it all
# (0009) A parcel handed to a 3PL, as far as we know: submitted, then accepted or rejected, shipped, delivered,
# or cancelled (at our request or by the 3PL).
THREEPL_PARCEL_STATES = ("submitted", "accepted", "on_hold", "rejected", "shipped", "delivered", "cancelled")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL stores `timestamptz`; SQLite has no time zone support, so values are stored as naive UTC in
    SQLAlchemy's fixed-width text format (which also keeps `<`/`>` comparisons correct) and come back
    tagged as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


products = Table(
    "products",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("price_cents", Integer, nullable=False),
    Column("weight_grams", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Added in 0002 (nullable: SQLite adds columns in place, without rebuilding a referenced table).
    # Supplier lead time for reorder planning; NULL means the default (7 days).
    Column("lead_time_days", Integer, nullable=True),
    # Parcel dimensions in millimetres, when known.
    Column("length_mm", Integer, nullable=True),
    Column("width_mm", Integer, nullable=True),
    Column("height_mm", Integer, nullable=True),
    CheckConstraint("price_cents >= 0", name="price_non_negative"),
    CheckConstraint("weight_grams > 0", name="weight_positive"),
)

warehouses = Table(
    "warehouses",
    metadata,
    Column("code", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("country", String(2), nullable=False),
    Column("region", String(100), nullable=True),
    Column("kind", String(8), nullable=False, server_default="own"),  # (0009)
    Column("provider", String(32), nullable=True),  # (0009) the 3PL of a "3pl" warehouse, e.g. shipbob
    CheckConstraint(_in("kind", WAREHOUSE_KINDS), name="kind"),
    CheckConstraint("(kind = 'own') = (provider IS NULL)", name="provider"),
)

stock_levels = Table(
    "stock_levels",
    metadata,
    Column("sku", String(64), ForeignKey("products.sku"), primary_key=True),
    Column("warehouse", String(32), ForeignKey("warehouses.code"), primary_key=True),
    Column("on_hand", Integer, nullable=False),
    Column("reserved", Integer, nullable=False),
    # Added in 0002: alert ops when available drops to this (NULL: no alerting for this SKU here).
    Column("reorder_point", Integer, nullable=True),
    CheckConstraint("reserved >= 0", name="reserved_non_negative"),
    CheckConstraint("on_hand >= reserved", name="on_hand_covers_reserved"),
)

stock_ledger = Table(
    "stock_ledger",
    metadata,
    # BigInteger on PostgreSQL, but INTEGER on SQLite so it stays the rowid alias (autoincrement).
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("sku", String(64), ForeignKey("products.sku"), nullable=False),
    Column("warehouse", String(32), ForeignKey("warehouses.code"), nullable=False),
    Column("delta_on_hand", Integer, nullable=False),
    Column("delta_reserved", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("ref", String(200), nullable=True),
    Column("note", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    CheckConstraint(_in("kind", LEDGER_KINDS), name="kind"),
    Index("ix_stock_ledger_sku_warehouse", "sku", "warehouse"),
    Index("ix_stock_ledger_ref", "ref"),
)

# Order ids are at most 64 characters; an order placed again keys its rows `<order_id>~<placement>`.
ORDER_KEY_LENGTH = 80

reservations = Table(
    "reservations",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("order_id", String(ORDER_KEY_LENGTH), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("warehouse", String(32), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Added in 0002: which shipment of the order this stock goes out with (1 for a single shipment).
    Column("shipment_no", Integer, nullable=False, server_default="1"),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint(_in("status", RESERVATION_STATUSES), name="status"),
    UniqueConstraint("order_id", "shipment_no", "sku", "warehouse"),
    Index("ix_reservations_sku_warehouse_status", "sku", "warehouse", "status"),
    ForeignKeyConstraint(["sku", "warehouse"], ["stock_levels.sku", "stock_levels.warehouse"]),
)

backorders = Table(
    "backorders",
    metadata,
    Column("order_id", String(ORDER_KEY_LENGTH), primary_key=True),
    Column("skus", JSON, nullable=False),  # sorted list of the skus that were short
    Column("created_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime, nullable=True),
    Index("ix_backorders_resolved_at_created_at", "resolved_at", "created_at"),
)

pick_tasks = Table(
    "pick_tasks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("order_id", String(ORDER_KEY_LENGTH), nullable=False),
    # The order's parcel number (shipment_no); the SQL column kept its first name, "attempt".
    Column("attempt", Integer, key="parcel_no", nullable=False),
    Column("warehouse", String(32), ForeignKey("warehouses.code"), nullable=False),
    Column("lines", JSON, nullable=False),  # [{"sku": ..., "quantity": ...}]
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime, nullable=True),
    # Added in 0004: a stock count or adjustment released this task's shipment and cancelled the task (in
    # one transaction); a confirmation of it is refused with ShipmentReleased, not as a plain cancellation.
    Column("released_at", UTCDateTime, nullable=True),
    CheckConstraint("attempt >= 0", name="attempt_non_negative"),
    CheckConstraint(_in("status", PICK_TASK_STATUSES), name="status"),
    UniqueConstraint("order_id", "parcel_no"),
    Index("ix_pick_tasks_status_created_at", "status", "created_at"),
)

shipments = Table(
    "shipments",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("order_id", String(ORDER_KEY_LENGTH), nullable=False),
    Column("carrier_shipment_id", String(200), nullable=False),
    Column("carrier", String(64), nullable=True),
    Column("service", String(64), nullable=True),
    Column("rate_cents", Integer, nullable=True),
    Column("tracking_number", String(200), nullable=True),
    Column("label_url", Text, nullable=True),
    Column("tracking_url", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(_in("status", SHIPMENT_STATUSES), name="status"),
    Index("ix_shipments_order_id", "order_id"),
    Index("ix_shipments_tracking_number", "tracking_number"),  # (0007) a carrier's tracking event names it
)

notifications = Table(
    "notifications",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("order_id", String(ORDER_KEY_LENGTH), nullable=False),
    Column("event", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("subject", Text, nullable=True),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("provider_message_id", String(200), nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    # (0007) The provider's word after accepting it: Twilio's delivered/undelivered/failed, an email bounce
    Column("delivery_status", String(16), nullable=True),
    Column("delivery_error", Text, nullable=True),
    Column("delivery_updated_at", UTCDateTime, nullable=True),
    # (0008) A customer SMS: where its email fallback goes (the customer's email) and what became of it
    # (pending, started, sent, not-needed, no-email, refused), once a status callback said it was not delivered
    Column("fallback_recipient", String(320), nullable=True),
    Column("fallback_status", String(16), nullable=True),
    CheckConstraint(_in("status", NOTIFICATION_STATUSES), name="status"),
    Index("ix_notifications_order_id", "order_id"),
    Index("ix_notifications_provider_message_id", "provider_message_id"),
    Index("ix_notifications_fallback_status", "fallback_status"),
)

# The order-signal outbox (0004): a signal or update for an order's workflow, written in the same transaction
# as the change it reports and delivered afterwards (at once by the API, else by the worker's relay), in id
# order per workflow. Pending until delivered_at is set; claimed_by/claimed_until: a relay is delivering it.
order_signals = Table(
    "order_signals",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("workflow_id", String(100), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(64), nullable=False),
    Column("payload", JSON, nullable=False),  # the one argument, as JSON
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("note", Text, nullable=True),  # e.g. delivered to nobody: the order was closed
    Column("claimed_by", String(32), nullable=True),
    Column("claimed_until", UTCDateTime, nullable=True),
    CheckConstraint(_in("kind", ORDER_SIGNAL_KINDS), name="kind"),
    Index("ix_order_signals_delivered_at_id", "delivered_at", "id"),
    Index("ix_order_signals_workflow_id", "workflow_id"),
)

# Expected receipts (one purchase-order line each): counted as "incoming" until received or cancelled.
purchase_orders = Table(
    "purchase_orders",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("sku", String(64), ForeignKey("products.sku"), nullable=False),
    Column("warehouse", String(32), ForeignKey("warehouses.code"), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("received_quantity", Integer, nullable=False),
    Column("eta", Date, nullable=True),
    Column("status", String(16), nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint("received_quantity >= 0", name="received_non_negative"),
    CheckConstraint(_in("status", PURCHASE_ORDER_STATUSES), name="status"),
    Index("ix_purchase_orders_sku_warehouse_status", "sku", "warehouse", "status"),
)

# One row per downward crossing of the reorder point by available stock; open (rearmed_at NULL) until
# available rises above the reorder point again. alerted_at: ops were emailed about it.
low_stock_crossings = Table(
    "low_stock_crossings",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("sku", String(64), ForeignKey("products.sku"), nullable=False),
    Column("warehouse", String(32), ForeignKey("warehouses.code"), nullable=False),
    Column("available", Integer, nullable=False),
    Column("reorder_point", Integer, nullable=False),
    Column("crossed_at", UTCDateTime, nullable=False),
    Column("rearmed_at", UTCDateTime, nullable=True),
    Column("alerted_at", UTCDateTime, nullable=True),
    Index("ix_low_stock_crossings_sku_warehouse_rearmed_at", "sku", "warehouse", "rearmed_at"),
)

# ---------------------------------------------------------------------------------------------------------
# Returns (0003): one row per RMA, its lines (authorised, then what the warehouse found), and the refunds
# ledger of the sandbox payments gateway (one refund per RMA: the key is "refund:<rma_id>").

RMA_STATUSES = ("REQUESTED", "IN_TRANSIT", "RECEIVED", "REFUND_FAILED", "REFUNDED", "EXCHANGED", "EXPIRED", "FAILED")
REFUND_STATUSES = ("refunded",)

rmas = Table(
    "rmas",
    metadata,
    Column("rma_id", String(100), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("exchange", Boolean, nullable=False),
    Column("replacement_order_id", String(80), nullable=True),
    Column("status", String(16), nullable=False),
    Column("carrier", String(64), nullable=True),
    Column("tracking_number", String(200), nullable=True),
    Column("label_url", Text, nullable=True),
    Column("note", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(_in("status", RMA_STATUSES), name="status"),
    Index("ix_rmas_order_id", "order_id"),
)

rma_lines = Table(
    "rma_lines",
    metadata,
    Column("rma_id", String(100), ForeignKey("rmas.rma_id"), primary_key=True),
    Column("sku", String(64), ForeignKey("products.sku"), primary_key=True),
    Column("quantity", Integer, nullable=False),  # authorised
    Column("resellable", Integer, nullable=False),  # found at inspection
    Column("damaged", Integer, nullable=False),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint("resellable >= 0 AND damaged >= 0", name="inspected_non_negative"),
    CheckConstraint("resellable + damaged <= quantity", name="inspected_within_authorised"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("refund_id", String(64), nullable=False, unique=True),
    Column("rma_id", String(100), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("amount_cents >= 0", name="amount_non_negative"),
    CheckConstraint(_in("status", REFUND_STATUSES), name="status"),
    Index("ix_refunds_order_id", "order_id"),
)

# HTTP API (0006). API keys: the secret is kept only as its SHA-256; scopes comma-separated, sorted.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(16), primary_key=True),  # the public part of the key, for lookup
    Column("name", String(100), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("scopes", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index("ix_api_keys_name", "name"),
)

# Idempotency-Key headers of order intake, per API key name: the order they placed and the digest of its body.
intake_keys = Table(
    "intake_keys",
    metadata,
    Column("client", String(100), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_digest", String(64), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# (0007) Numbers that texted STOP (opted_out true) or START again; checked before every SMS.
sms_opt_outs = Table(
    "sms_opt_outs",
    metadata,
    Column("phone", String(32), primary_key=True),
    Column("opted_out", Boolean, nullable=False),
    Column("keyword", String(16), nullable=False),  # the word that set it: STOP, START, UNSUBSCRIBE, ...
    Column("updated_at", UTCDateTime, nullable=False),
)

# (0007) Every provider webhook event once: its id per source (easypost, twilio); a repeat is acknowledged
# and changes nothing.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("subject", String(200), nullable=True),  # what it is about: a tracking code, a message sid
    Column("received_at", UTCDateTime, nullable=False),
)

# (0009) Each parcel handed to a 3PL: one row per reference id ("3pl:<order key>:<n>"), its state as far as the
# 3PL told us (forward moves only), its carrier's tracking number once shipped (a carrier tracking webhook
# names it), and the times the SLAs are measured from.
threepl_parcels = Table(
    "threepl_parcels",
    metadata,
    Column("reference_id", String(120), primary_key=True),
    Column("order_id", String(ORDER_KEY_LENGTH), nullable=False),
    Column("shipment_no", Integer, nullable=False),
    Column("provider", String(32), nullable=False),
    Column("warehouse", String(32), nullable=False),
    Column("provider_order_id", String(64), nullable=True),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("carrier", String(64), nullable=True),
    Column("service", String(64), nullable=True),
    Column("tracking_number", String(200), nullable=True),
    Column("tracking_url", Text, nullable=True),
    Column("submitted_at", UTCDateTime, nullable=False),
    Column("accepted_at", UTCDateTime, nullable=True),
    Column("shipped_at", UTCDateTime, nullable=True),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("provider_updated_at", UTCDateTime, nullable=True),  # the 3PL's time of its last change we applied
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(_in("state", THREEPL_PARCEL_STATES), name="state"),
    Index("ix_threepl_parcels_order_id", "order_id"),
    Index("ix_threepl_parcels_tracking_number", "tracking_number"),
    Index("ix_threepl_parcels_provider_state", "provider", "state"),
)

# (0009) Per 3PL, the newest change time its "changes since" pull has seen: the next pull starts there.
threepl_sync_cursors = Table(
    "threepl_sync_cursors",
    metadata,
    Column("provider", String(32), primary_key=True),
    Column("orders_since", UTCDateTime, nullable=True),
    Column("inventory_synced_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

# (0010) Customers' data keys (common.privacy): each wrapped (AES-256-GCM) by the master key `wrapped_by`; a
# forgotten customer's keys keep their row with `wrapped` NULL and `destroyed_at` set (crypto-shredding: the
# payloads under them can no longer be read). A customer may have several keys (two first uses at once; a key
# made after an erasure); the newest live one encrypts new payloads.
customer_keys = Table(
    "customer_keys",
    metadata,
    Column("key_id", String(40), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("wrapped", LargeBinary, nullable=True),
    Column("wrapped_by", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("destroyed_at", UTCDateTime, nullable=True),
    Index("ix_customer_keys_customer_id", "customer_id"),
)

# (0010) Which customer each workflow's payloads belong to (an order, its returns, an SMS's email fallback),
# learnt from the workflow's input when it was started.
workflow_customers = Table(
    "workflow_customers",
    metadata,
    Column("workflow_id", String(200), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_workflow_customers_customer_id", "customer_id"),
)
