"""EasyPost's webhooks: an Event (`{"object": "Event", "id": "evt_...", "description": "tracker.updated",
"result": {<Tracker>}, ...}`) signed with the webhook's secret (`X-Hmac-Signature: hmac-sha256-hex=<HMAC-SHA256
of the body>`), checked with the SDK's own `easypost.validate_webhook`. Only tracker events matter here:
`tracker.created` (its first detail) and `tracker.updated` (each change after)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import easypost
from easypost.errors import SignatureVerificationError
from pydantic import ValidationError

from common.integrations.carrier import parse_tracker
from common.integrations.carrier_api import CarrierTracker

SIGNATURE_HEADER = "X-Hmac-Signature"
TRACKER_EVENTS = frozenset({"tracker.created", "tracker.updated"})


class WebhookSignatureError(Exception):
    """Not signed with our secret: not from the carrier, or tampered with on the way."""


@dataclass(frozen=True)
class CarrierEvent:
    event_id: str
    description: str  # "tracker.updated", "batch.created", ...
    created_at: datetime | None
    tracker: CarrierTracker | None  # for a tracker event
    # When the tracker last changed (its updated_at), else the event's own time
    occurred_at: datetime | None


def verify_event(body: bytes, headers: Mapping[str, str], secret: str) -> CarrierEvent:
    """The event if `body` carries our signature; WebhookSignatureError if not, ValueError if it is signed but
    not an EasyPost event."""
    signature = headers.get(SIGNATURE_HEADER) or headers.get(SIGNATURE_HEADER.lower())
    try:
        data: Any = easypost.validate_webhook(body, {SIGNATURE_HEADER: signature}, secret)
    except SignatureVerificationError as err:
        raise WebhookSignatureError(err.message or "signature does not match") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"the event is not JSON: {err}") from None
    if not isinstance(data, dict) or data.get("object") != "Event" or not isinstance(data.get("id"), str):
        raise ValueError("not an EasyPost Event (object, id)")
    description = str(data.get("description") or "")
    result = data.get("result")
    tracker = None
    if description in TRACKER_EVENTS:
        if not isinstance(result, dict):
            raise ValueError(f"a {description} event without its tracker (result)")
        try:
            tracker = parse_tracker(result)
        except (KeyError, TypeError, ValidationError) as err:
            raise ValueError(f"the event's tracker is not readable: {err}") from None
    created = _time(data.get("created_at"))
    updated = _time(result.get("updated_at")) if isinstance(result, dict) else None
    return CarrierEvent(data["id"], description, created, tracker, updated or created)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
