"""POST /v1/webhooks/3pl/{provider}: a 3PL's order events (ShipBob's webhooks). No API key: the Standard Webhooks
signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`), checked by the provider's adapter with
FULFILL_THREEPL_WEBHOOK_SECRET, is the authentication."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from common.api.threepl_events import Outcome
from common.http.auth import api_of
from common.http.problems import responses
from common.integrations.threepl_webhooks import SIGNATURE_HEADER

router = APIRouter(tags=["webhooks"])

# Documents the signature as the webhook's security scheme (the check itself is the provider adapter's)
threepl_signature = APIKeyHeader(
    name=SIGNATURE_HEADER,
    scheme_name="StandardWebhooksSignature",
    auto_error=False,
    description="Standard Webhooks: `v1,` and the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, "
    "keyed with the subscription's `whsec_` secret (FULFILL_THREEPL_WEBHOOK_SECRET); the timestamp within 5 minutes.",
)

Provider = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", examples=["shipbob"])]


class ThreePLEventAck(BaseModel):
    event_id: str = Field(examples=["msg_2mY6Jc0cQ3bB0kq9"])
    topic: str = Field(examples=["order.shipped"])
    outcome: Outcome = Field(
        description="applied: the parcel moved and its order is told; duplicate: this event id came before; stale: "
        "the parcel is as far along already (events come out of order); not-ours: no parcel of ours has the "
        "reference; ignored: a topic that moves no parcel (inventory...). Each is acknowledged and changes nothing "
        "but the first"
    )
    reference_id: str | None = Field(examples=["3pl:ORD-1001:1"])
    order_id: str | None = Field(examples=["ORD-1001"])
    state: str | None = Field(description="The parcel's state the event reports", examples=["shipped"])


@router.post(
    "/v1/webhooks/3pl/{provider}",
    response_model=ThreePLEventAck,
    responses=responses(401, 404, 422, 503),
    summary="3PL order events (ShipBob webhooks)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "description": "A ShipBob webhook: {topic, event_time, data}"}
                }
            },
        }
    },
)
async def threepl_event(
    request: Request, provider: Provider, _: Annotated[str | None, Depends(threepl_signature)]
) -> ThreePLEventAck:
    """A 3PL's webhook (the URL to subscribe at the 3PL: `https://<your API>/v1/webhooks/3pl/shipbob`). A forged,
    tampered, unsigned or stale one (timestamp over 5 minutes off) is refused (401) and changes nothing; a provider
    not configured here is 404. Everything else is acknowledged (200): an event moves its parcel once, forward only,
    and its order hears of it; a repeat, a late event, another's order or an inventory topic does nothing.
    503: the database did not answer; the 3PL retries."""
    receipt = await api_of(request).threepl_event(provider, await request.body(), request.headers)
    return ThreePLEventAck(
        event_id=receipt.event_id,
        topic=receipt.topic,
        outcome=receipt.outcome,
        reference_id=receipt.reference_id,
        order_id=receipt.order_id,
        state=receipt.state,
    )
