"""SQLite storage of the sandbox: outbox messages, carrier shipments and trackers, payment refunds, the 3PL's
orders and stock, in one file.

stdlib sqlite3 on the event loop thread: every call is a single small statement on a local file, faster
than a thread hop, and running read-modify-write without an `await` in between keeps it atomic.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT,
    body TEXT NOT NULL,
    html INTEGER NOT NULL,
    order_id TEXT,
    provider_id TEXT,
    status TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_order ON messages (order_id);
CREATE INDEX IF NOT EXISTS messages_provider ON messages (provider_id);
CREATE TABLE IF NOT EXISTS shipments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tracking_code TEXT UNIQUE,
    tracker_id TEXT UNIQUE,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trackers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tracking_code TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    payment_intent TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_payment_intent ON refunds (payment_intent);
CREATE TABLE IF NOT EXISTS sms_opt_outs (
    phone TEXT PRIMARY KEY,
    keyword TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS threepl_orders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id INTEGER UNIQUE,
    reference_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS threepl_orders_status ON threepl_orders (status);
CREATE INDEX IF NOT EXISTS threepl_orders_updated ON threepl_orders (updated_ms);
CREATE TABLE IF NOT EXISTS threepl_stock (
    sku TEXT PRIMARY KEY,
    on_hand INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    refund_id TEXT NOT NULL
);
"""


class OutboxMessage(BaseModel):
    """One email or SMS the sandbox received (what `fulfill outbox` prints)."""

    id: int
    channel: Literal["email", "sms"]
    sender: str
    recipient: str
    subject: str | None = None
    body: str
    html: bool = False
    order_id: str | None = None
    provider_id: str | None = None  # SMS sid or email Message-ID
    # SMS delivery status as reported through the status callback (queued -> sent -> delivered); email: None
    status: str | None = None
    received_at: datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


class SandboxStore:
    def __init__(self, db_path: str | Path) -> None:
        if str(db_path) != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        if str(db_path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=wal")
            # No fsync per commit (WAL makes that safe against corruption): every received message and SMS
            # status update would otherwise wait for the disk. A sandbox loses at most its last few
            # messages on power loss, never on a process crash.
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- outbox --------------------------------------------------------------------------------------------

    def add_message(
        self,
        *,
        channel: Literal["email", "sms"],
        sender: str,
        recipient: str,
        subject: str | None,
        body: str,
        html: bool,
        order_id: str | None,
        provider_id: str | None,
        status: str | None = None,
    ) -> OutboxMessage:
        received_at = utcnow()
        cur = self._db.execute(
            "INSERT INTO messages (channel, sender, recipient, subject, body, html, order_id, provider_id,"
            " status, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                channel,
                sender,
                recipient,
                subject,
                body,
                int(html),
                order_id,
                provider_id,
                status,
                received_at.isoformat(),
            ),
        )
        assert cur.lastrowid is not None
        return OutboxMessage(
            id=cur.lastrowid,
            channel=channel,
            sender=sender,
            recipient=recipient,
            subject=subject,
            body=body,
            html=html,
            order_id=order_id,
            provider_id=provider_id,
            status=status,
            received_at=received_at,
        )

    def messages(self, order_id: str | None = None) -> list[OutboxMessage]:
        if order_id is None:
            rows = self._db.execute("SELECT * FROM messages ORDER BY id").fetchall()
        else:
            rows = self._db.execute("SELECT * FROM messages WHERE order_id = ? ORDER BY id", (order_id,)).fetchall()
        return [_message(row) for row in rows]

    def sms_to(self, recipient: str, sender: str | None = None) -> list[OutboxMessage]:
        """The SMS to `recipient` (from `sender`, if given), newest first."""
        sql = "SELECT * FROM messages WHERE channel = 'sms' AND recipient = ?"
        params: tuple[str, ...] = (recipient,)
        if sender is not None:
            sql, params = sql + " AND sender = ?", (recipient, sender)
        return [_message(row) for row in self._db.execute(sql + " ORDER BY id DESC", params).fetchall()]

    def message_by_provider_id(self, provider_id: str) -> OutboxMessage | None:
        row = self._db.execute("SELECT * FROM messages WHERE provider_id = ? ORDER BY id", (provider_id,)).fetchone()
        return _message(row) if row is not None else None

    def set_message_status(self, provider_id: str, status: str) -> bool:
        cur = self._db.execute("UPDATE messages SET status = ? WHERE provider_id = ?", (status, provider_id))
        return cur.rowcount > 0

    # -- numbers that texted STOP (Twilio's blocklist: a message to one is refused with 21610) -------------

    def set_opted_out(self, phone: str, opted_out: bool, keyword: str) -> None:
        if opted_out:
            self._db.execute(
                "INSERT INTO sms_opt_outs (phone, keyword, at) VALUES (?, ?, ?) ON CONFLICT (phone) DO UPDATE"
                " SET keyword = excluded.keyword, at = excluded.at",
                (phone, keyword, utcnow().isoformat()),
            )
        else:
            self._db.execute("DELETE FROM sms_opt_outs WHERE phone = ?", (phone,))

    def is_opted_out(self, phone: str) -> bool:
        return self._db.execute("SELECT 1 FROM sms_opt_outs WHERE phone = ?", (phone,)).fetchone() is not None

    # -- shipments (a JSON document each; tracking code and tracker id indexed for lookups) -----------------

    def insert_shipment(self, doc: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO shipments (id, doc) VALUES (?, ?)", (doc["id"], json.dumps(doc)))

    def update_shipment(self, doc: dict[str, Any]) -> None:
        tracker = doc.get("tracker") or {}
        self._db.execute(
            "UPDATE shipments SET doc = ?, tracking_code = ?, tracker_id = ? WHERE id = ?",
            (json.dumps(doc), doc.get("tracking_code"), tracker.get("id"), doc["id"]),
        )

    def tracking_code_taken(self, tracking_code: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM shipments WHERE tracking_code = ? UNION ALL SELECT 1 FROM trackers WHERE tracking_code = ?",
            (tracking_code, tracking_code),
        ).fetchone()
        return row is not None

    def shipment(self, shipment_id: str) -> dict[str, Any] | None:
        return self._one("SELECT doc FROM shipments WHERE id = ?", shipment_id)

    def shipment_by_tracking_code(self, tracking_code: str) -> dict[str, Any] | None:
        return self._one("SELECT doc FROM shipments WHERE tracking_code = ?", tracking_code)

    def shipment_by_tracker_id(self, tracker_id: str) -> dict[str, Any] | None:
        return self._one("SELECT doc FROM shipments WHERE tracker_id = ?", tracker_id)

    def shipments(self) -> list[dict[str, Any]]:
        return [json.loads(row["doc"]) for row in self._db.execute("SELECT doc FROM shipments ORDER BY seq")]

    # -- standalone carrier trackers (POST /v2/trackers for a code no sandbox label has) ----------------------

    def insert_tracker(self, doc: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO trackers (id, tracking_code, doc) VALUES (?, ?, ?)",
            (doc["id"], doc["tracking_code"], json.dumps(doc)),
        )

    def update_tracker(self, doc: dict[str, Any]) -> None:
        self._db.execute("UPDATE trackers SET doc = ? WHERE id = ?", (json.dumps(doc), doc["id"]))

    def tracker(self, tracker_id: str) -> dict[str, Any] | None:
        return self._one("SELECT doc FROM trackers WHERE id = ?", tracker_id)

    def tracker_by_tracking_code(self, tracking_code: str) -> dict[str, Any] | None:
        return self._one("SELECT doc FROM trackers WHERE tracking_code = ?", tracking_code)

    def trackers(self) -> list[dict[str, Any]]:
        return [json.loads(row["doc"]) for row in self._db.execute("SELECT doc FROM trackers ORDER BY seq")]

    # -- payment refunds (a Stripe refund object each) and the idempotency keys that made them ------------

    def insert_refund(self, doc: dict[str, Any], *, idempotency_key: str | None, fingerprint: str) -> None:
        with self._db:  # both rows or neither: a replayed key always finds its refund
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO refunds (id, payment_intent, doc) VALUES (?, ?, ?)",
                (doc["id"], doc["payment_intent"], json.dumps(doc)),
            )
            if idempotency_key is not None:
                self._db.execute(
                    "INSERT INTO idempotency_keys (key, fingerprint, refund_id) VALUES (?, ?, ?)",
                    (idempotency_key, fingerprint, doc["id"]),
                )

    def idempotent_refund(self, idempotency_key: str) -> tuple[str, dict[str, Any]] | None:
        """(fingerprint of the first request, the refund it made) for a key seen before, else None."""
        row = self._db.execute(
            "SELECT k.fingerprint, r.doc FROM idempotency_keys k JOIN refunds r ON r.id = k.refund_id WHERE k.key = ?",
            (idempotency_key,),
        ).fetchone()
        return (row["fingerprint"], json.loads(row["doc"])) if row is not None else None

    def refund(self, refund_id: str) -> dict[str, Any] | None:
        return self._one("SELECT doc FROM refunds WHERE id = ?", refund_id)

    def refunds(self, payment_intent: str | None = None) -> list[dict[str, Any]]:
        """Oldest first."""
        if payment_intent is None:
            rows = self._db.execute("SELECT doc FROM refunds ORDER BY seq").fetchall()
        else:
            rows = self._db.execute(
                "SELECT doc FROM refunds WHERE payment_intent = ? ORDER BY seq", (payment_intent,)
            ).fetchall()
        return [json.loads(row["doc"]) for row in rows]

    # -- the 3PL's orders (a ShipBob Order each; its shipment's status and last change indexed) and stock --------

    def insert_threepl_order(self, doc: dict[str, Any], *, first_id: int = 100001) -> int:
        """Store a new order; its id (first_id, first_id + 1, ... in the order they came) is set in `doc`."""
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "INSERT INTO threepl_orders (reference_id, status, updated_ms, doc) VALUES (?, ?, ?, '{}')",
                (doc["reference_id"], _threepl_status(doc), doc["_sandbox"]["updated_ms"]),
            )
            assert cur.lastrowid is not None
            doc["id"] = first_id - 1 + cur.lastrowid
            self._db.execute(
                "UPDATE threepl_orders SET id = ?, doc = ? WHERE seq = ?", (doc["id"], json.dumps(doc), cur.lastrowid)
            )
        return int(doc["id"])

    def update_threepl_order(self, doc: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE threepl_orders SET status = ?, updated_ms = ?, doc = ? WHERE id = ?",
            (_threepl_status(doc), doc["_sandbox"]["updated_ms"], json.dumps(doc), doc["id"]),
        )

    def threepl_order(self, order_id: int) -> dict[str, Any] | None:
        row = self._db.execute("SELECT doc FROM threepl_orders WHERE id = ?", (order_id,)).fetchone()
        return json.loads(row["doc"]) if row is not None else None

    def threepl_order_by_reference(self, reference_id: str) -> dict[str, Any] | None:
        return self._one("SELECT doc FROM threepl_orders WHERE reference_id = ?", reference_id)

    def threepl_orders(
        self, *, statuses: list[str] | None = None, updated_since_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """Oldest first; only those whose shipment has one of `statuses`, changed at or after `updated_since_ms`."""
        where: list[str] = ["1 = 1"]
        args: list[str | int] = []
        if statuses is not None:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            args.extend(statuses)
        if updated_since_ms is not None:
            where.append("updated_ms >= ?")
            args.append(updated_since_ms)
        sql = f"SELECT doc FROM threepl_orders WHERE {' AND '.join(where)} ORDER BY seq"
        return [json.loads(row["doc"]) for row in self._db.execute(sql, args)]

    def threepl_stock(self) -> dict[str, int]:
        """SKU -> units on hand, by SKU."""
        rows = self._db.execute("SELECT sku, on_hand FROM threepl_stock ORDER BY sku")
        return {row["sku"]: row["on_hand"] for row in rows}

    def set_threepl_stock(self, levels: dict[str, int], *, only_new: bool = False) -> None:
        """Set SKUs' units on hand (`only_new`: only of SKUs that have no level yet)."""
        conflict = "DO NOTHING" if only_new else "DO UPDATE SET on_hand = excluded.on_hand"
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT INTO threepl_stock (sku, on_hand) VALUES (?, ?) ON CONFLICT (sku) {conflict}",
                list(levels.items()),
            )

    def _one(self, sql: str, arg: str) -> dict[str, Any] | None:
        row = self._db.execute(sql, (arg,)).fetchone()
        return json.loads(row["doc"]) if row is not None else None


def _threepl_status(doc: dict[str, Any]) -> str:
    return str(doc["shipments"][0]["status"])


def _message(row: sqlite3.Row) -> OutboxMessage:
    return OutboxMessage(
        id=row["id"],
        channel=row["channel"],
        sender=row["sender"],
        recipient=row["recipient"],
        subject=row["subject"],
        body=row["body"],
        html=bool(row["html"]),
        order_id=row["order_id"],
        provider_id=row["provider_id"],
        status=row["status"],
        received_at=datetime.fromisoformat(row["received_at"]),
    )
