"""3PL side effects for the parcels a 3PL fulfills: hand one over, ask where it is, ask the 3PL not to ship it,
and have the carrier follow the tracking number it shipped with.

Submission is idempotent by the parcel's reference id (`3pl:<order key>:<n>`, also the idempotency key): a
retry, or a worker that died mid-call, finds the order the 3PL already has instead of creating another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from common.integrations.carrier_api import Carrier, CarrierError, CarrierTransientError
from common.integrations.threepl_api import (
    ThreePLError,
    ThreePLNotFound,
    ThreePLProvider,
    ThreePLRecipient,
    ThreePLRefused,
    ThreePLTransientError,
)
from common.integrations.threepl_providers import provider_for
from common.models import ShippingSpeed
from common.store import Store
from common.threepl.contracts import (
    ThreePLCancelRequest,
    ThreePLCancelResult,
    ThreePLPollRequest,
    ThreePLState,
    ThreePLSubmission,
    ThreePLUpdate,
)
from common.threepl.news import cancel_news, news_of

# The 3PL's shipping methods (ShipBob's ship options) for the order's speed
SHIPPING_METHODS = {
    ShippingSpeed.STANDARD: "Standard",
    ShippingSpeed.EXPRESS: "Expedited",
    ShippingSpeed.OVERNIGHT: "Overnight",
}


class ThreePLActivities:
    def __init__(self, store: Store, providers: Mapping[str, ThreePLProvider], carrier: Carrier) -> None:
        self._store = store
        self._providers = dict(providers)
        self._carrier = carrier

    def activities(self) -> list[Callable[..., Any]]:
        return [self.submit_to_3pl, self.check_at_3pl, self.await_3pl_change, self.cancel_at_3pl, self.track_3pl_parcel]

    @activity.defn(name="submit_to_3pl")
    async def submit_to_3pl(self, submission: ThreePLSubmission) -> ThreePLUpdate:
        """Hand the parcel to its 3PL (or find it there, submitted before) and record it; the 3PL's answer. A
        refusal at once (an unknown SKU, no stock, an address it cannot ship to) is the answer REJECTED."""
        reference = submission.reference_id
        recipient = ThreePLRecipient(address=submission.ship_to, email=submission.email, phone=submission.phone)
        provider = self._provider(submission.provider)
        try:
            order = await provider.submit_order(
                reference_id=reference,
                order_number=submission.order_number,
                lines=[(line.sku, line.quantity) for line in submission.lines],
                recipient=recipient,
                shipping_method=SHIPPING_METHODS.get(submission.speed, "Standard"),
                idempotency_key=reference,
            )
        except ThreePLRefused as err:
            answer = ThreePLUpdate(
                reference_id=reference,
                shipment_no=submission.shipment_no,
                state=ThreePLState.REJECTED,
                reason=err.reason,
                source="submit",
            )
            await self._store.threepl.record_submission(submission, None, answer)
            return answer
        except ThreePLTransientError:
            raise
        except ThreePLError as err:
            raise _refused(err) from err
        news = news_of(order, source="submit") or ThreePLUpdate(
            reference_id=reference, shipment_no=submission.shipment_no, state=ThreePLState.SUBMITTED, source="submit"
        )
        await self._store.threepl.record_submission(submission, order.provider_id, news)
        return news

    @activity.defn(name="check_at_3pl")
    async def check_at_3pl(self, request: ThreePLPollRequest) -> ThreePLUpdate:
        """Where the parcel is at its 3PL now, in one call (asked before a cancel is accepted)."""
        return await self._news(request)

    @activity.defn(name="await_3pl_change")
    async def await_3pl_change(self, request: ThreePLPollRequest) -> ThreePLUpdate:
        """Returns when the 3PL reports a state other than `last_state`; raises (and so is retried at the poll
        interval, without touching history) while nothing changed: the safety net for a lost webhook."""
        news = await self._news(request)
        if news.state == request.last_state:
            # BENIGN: an unchanged parcel is the normal case of this poll loop, not an error to log or count.
            raise ApplicationError(
                f"3pl {request.reference_id} still {news.state.value}",
                type="ThreePLUnchanged",
                category=ApplicationErrorCategory.BENIGN,
            )
        return news

    @activity.defn(name="cancel_at_3pl")
    async def cancel_at_3pl(self, request: ThreePLCancelRequest) -> ThreePLCancelResult:
        """Ask the 3PL not to ship the parcel: accepted (also when it never had it, or cancelled it before), or
        refused because it left, with where it went. Idempotent."""
        provider = self._provider(request.provider)
        try:
            answer = await provider.request_cancel(request.reference_id)
        except ThreePLNotFound:
            return ThreePLCancelResult(accepted=True, reason="the 3PL never had it")
        except ThreePLTransientError:
            raise
        except ThreePLError as err:
            raise _refused(err) from err
        news = cancel_news(
            request.reference_id, request.shipment_no, answer, reason="cancelled at our request", source="cancel"
        )
        if news is None:
            # Refused, yet not shipped (the 3PL is mid-pack, say): asked again until it cancels it or ships it
            raise ApplicationError(
                f"3pl {request.reference_id}: cancel refused for now ({answer.reason or answer.status.value})",
                type="ThreePLCancelRefused",
            )
        await self._store.threepl.apply(news)
        return ThreePLCancelResult(accepted=answer.accepted, reason=answer.reason, update=news)

    @activity.defn(name="track_3pl_parcel")
    async def track_3pl_parcel(self, update: ThreePLUpdate) -> None:
        """Have the carrier follow the tracking number the 3PL shipped with (an EasyPost tracker), so the parcel's
        tracking polls and webhooks work as for our own labels. Idempotent: the carrier keeps one per code."""
        if not update.tracking_number or not update.carrier:
            raise ApplicationError(
                f"3pl {update.reference_id} shipped without a tracking number",
                type="ThreePLNoTracking",
                non_retryable=True,
            )
        try:
            await self._carrier.create_tracker(update.tracking_number, update.carrier)
        except CarrierTransientError:
            raise
        except CarrierError as err:
            raise ApplicationError(str(err), type="CarrierRejected", non_retryable=True) from err

    async def _news(self, request: ThreePLPollRequest) -> ThreePLUpdate:
        provider = self._provider(request.provider)
        try:
            order = await provider.get_order(request.reference_id)
        except ThreePLTransientError:
            raise
        except ThreePLError as err:
            raise _refused(err) from err
        news = news_of(order, source="poll") if order is not None else None
        if news is None:
            # Retried, not taken for "nothing ships": the 3PL accepted it, so a lookup that misses it is the
            # 3PL's lag or outage, and re-sending the goods elsewhere could ship them twice.
            raise ApplicationError(f"3pl {request.reference_id}: the 3PL does not find the order", type="ThreePLLookup")
        await self._store.threepl.apply(news)
        return news

    def _provider(self, name: str) -> ThreePLProvider:
        try:
            return provider_for(self._providers, name)
        except ThreePLError as err:
            raise ApplicationError(str(err), type="UnknownThreePLProvider", non_retryable=True) from err


def _refused(err: ThreePLError) -> ApplicationError:
    """An error retrying cannot fix (a bad token, a malformed request): the part waits for ops."""
    return ApplicationError(str(err), type="ThreePLRejected", non_retryable=True)
