"""POST /v1/webhooks/easypost: the carrier's tracking events (EasyPost `tracker.updated`). No API key: the
signature (`X-Hmac-Signature`, HMAC-SHA256 of the body with the webhook's secret) is the authentication."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from common.http.auth import api_of
from common.http.problems import responses
from common.integrations.carrier_webhooks import SIGNATURE_HEADER

router = APIRouter(tags=["webhooks"])

# Documents the signature as the webhook's security scheme (the check itself is easypost.validate_webhook's)
easypost_signature = APIKeyHeader(
    name=SIGNATURE_HEADER,
    scheme_name="EasyPostSignature",
    auto_error=False,
    description="EasyPost's event signature: `hmac-sha256-hex=` and the HMAC-SHA256 of the body, keyed with the "
    "webhook's secret (FULFILL_CARRIER_WEBHOOK_SECRET).",
)


class CarrierEventAck(BaseModel):
    event_id: str
    applied: bool = Field(description="False: not a tracking event, or not about a parcel of ours")
    order_id: str | None
    note: str


@router.post(
    "/v1/webhooks/easypost",
    response_model=CarrierEventAck,
    responses=responses(401, 404, 422, 503),
    summary="Carrier tracking events (EasyPost webhooks)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "description": "An EasyPost Event"}}},
        }
    },
)
async def easypost_event(request: Request, _: Annotated[str | None, Depends(easypost_signature)]) -> CarrierEventAck:
    """An EasyPost Event, signed with the webhook's secret (`FULFILL_CARRIER_WEBHOOK_SECRET`). A tracker.updated
    event moves the parcel it tracks, once: a forged, tampered or replayed event is refused (401) and changes
    nothing. Any other event is acknowledged and ignored. 503: the database did not answer; EasyPost retries."""
    receipt = await api_of(request).carrier_event(await request.body(), request.headers)
    return CarrierEventAck(
        event_id=receipt.event_id, applied=receipt.applied, order_id=receipt.order_id, note=receipt.note
    )
