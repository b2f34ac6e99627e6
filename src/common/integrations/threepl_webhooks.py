"""Standard Webhooks (https://www.standardwebhooks.com), the way ShipBob (and Svix, and others) sign webhooks.

Headers `webhook-id` (the event's id, the same on every retry), `webhook-timestamp` (Unix seconds of this
delivery attempt) and `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` signatures over
`{id}.{timestamp}.{raw body}`, keyed with the base64-decoded part of the `whsec_...` secret (several when the
sender rotates its secret: one matching is enough). A timestamp further than the tolerance from now is refused,
so a recorded webhook cannot be replayed later.

The `standardwebhooks` package computes the signature; this module reads the headers itself so that any
malformed header is a refusal (the package's own `verify` raises ValueError on some) and the tolerance can be
checked against a given `now` (tests, known vectors).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from standardwebhooks import Webhook

from common.integrations.threepl_api import ThreePLWebhookRefused

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True)
class VerifiedWebhook:
    webhook_id: str
    sent_at: datetime
    payload: Any  # the body as JSON


def webhook_key(secret: str) -> Webhook:
    """The signer of a `whsec_<base64>` secret (a bare base64 key is taken too); ValueError if it is not one."""
    try:
        return Webhook(secret)
    except (binascii.Error, ValueError, UnicodeError) as err:
        raise ValueError("the webhook secret is not whsec_ followed by base64") from err
    except Exception as err:  # EmptyWebhookSecretError
        raise ValueError(f"the webhook secret is not usable: {err}") from err


def verify_standard_webhook(
    body: bytes,
    headers: Mapping[str, str],
    signer: Webhook,
    *,
    now: datetime | None = None,
    tolerance: timedelta = TOLERANCE,
) -> VerifiedWebhook:
    """The webhook's id, timestamp and JSON body if `signer`'s key signed it within `tolerance` of `now`;
    ThreePLWebhookRefused (saying why) if not."""
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get(ID_HEADER, "").strip()
    stamp = lowered.get(TIMESTAMP_HEADER, "").strip()
    signatures = lowered.get(SIGNATURE_HEADER, "").strip()
    missing = [name for name, value in ((ID_HEADER, webhook_id), (TIMESTAMP_HEADER, stamp)) if not value]
    if not signatures:
        missing.append(SIGNATURE_HEADER)
    if missing:
        raise ThreePLWebhookRefused(f"missing header(s) {', '.join(missing)}")
    sent_at = _timestamp(stamp)
    now = now if now is not None else datetime.now(UTC)
    if abs(now - sent_at) > tolerance:
        raise ThreePLWebhookRefused(
            f"webhook-timestamp {stamp} is {abs(now - sent_at).total_seconds():.0f} s from now: more than "
            f"{tolerance.total_seconds():.0f} s (a replay, or a clock off)"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ThreePLWebhookRefused("the body is not UTF-8") from None
    expected = base64.b64decode(signer.sign(webhook_id, sent_at, text).partition(",")[2])
    if not any(hmac.compare_digest(expected, given) for given in _v1_signatures(signatures)):
        raise ThreePLWebhookRefused("no v1 signature matches: not signed with our secret, or changed on the way")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise ThreePLWebhookRefused(f"the body is not JSON: {err}") from None
    return VerifiedWebhook(webhook_id, sent_at, payload)


def _timestamp(stamp: str) -> datetime:
    if not stamp.isdigit():  # whole Unix seconds, as the standard has them
        raise ThreePLWebhookRefused(f"webhook-timestamp {stamp[:20]!r} is not Unix seconds")
    try:
        return datetime.fromtimestamp(int(stamp), UTC)
    except (OverflowError, OSError, ValueError):
        raise ThreePLWebhookRefused(f"webhook-timestamp {stamp[:20]!r} is out of range") from None


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded v1 signatures of a webhook-signature header; others (other versions, garbage) are skipped."""
    found = []
    for item in header.split():
        version, sep, encoded = item.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found
