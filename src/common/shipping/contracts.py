"""The label record of a parcel and the refusals about it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from common.db.errors import StoreError
from common.models import TrackingStatus


@dataclass(frozen=True)
class LabelRecord:
    """A parcel's label, from the carrier shipment it is bought on (created) to purchased, or voided."""

    key: str
    order_id: str
    carrier_shipment_id: str
    carrier: str | None
    service: str | None
    rate_cents: int | None
    tracking_number: str | None
    label_url: str | None
    tracking_url: str | None
    status: str  # created | purchased | voided
    created_at: datetime
    updated_at: datetime


class LabelNotFound(StoreError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no shipment recorded under {key!r}")


@dataclass(frozen=True)
class TrackingEventRecord:
    """What recording a carrier's tracking event did (LabelStore.record_tracking_event)."""

    first_time: bool  # False: the event id was received before; nothing was done this time
    order_id: str | None  # the order of the parcel it is about (our label, or a 3PL's); None: not ours
    signal_id: int | None  # the order-signal outbox row that tells the order, to deliver now


class TrackingPush(BaseModel):
    """A carrier's tracking event about one of the order's parcels (an EasyPost tracker.updated webhook),
    signalled to the order: `carrier_tracking`."""

    event_id: str
    tracking_number: str
    status: TrackingStatus
    estimated_delivery: datetime | None = None
    message: str = ""
    # When the carrier's tracker last changed: an event older than one already applied changes nothing
    occurred_at: datetime


class LabelUndo(StrEnum):
    """What undoing a label found at the carrier."""

    NOTHING_BOUGHT = "nothing_bought"  # no label was ever bought under the key
    VOIDED = "voided"  # the carrier accepted the refund (or had already)
    IN_USE = "in_use"  # the carrier has the parcel, or refused the refund: the label stays, the goods are gone


class LabelUndoResult(BaseModel):
    outcome: LabelUndo
    tracking_status: TrackingStatus | None = None
    refund_status: str | None = None
    note: str = ""
