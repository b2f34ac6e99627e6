"""Refusals the engine reports to callers; each message says why, and nothing was changed.

Three families, which the HTTP API answers as 404, 409 and 422: `NotFound` (no such order, RMA or pick task),
`Conflict` (the thing exists but its state refuses the request: the order was placed already, it shipped, the
pick was cancelled) and the rest (the input itself is wrong). And WebhookRefused (401): not the provider's."""

from __future__ import annotations


class FulfillmentError(Exception):
    """A request the engine refused; the message says why. Nothing was changed."""


class NotFound(FulfillmentError):
    """The order, RMA or pick task the request names does not exist."""


class Conflict(FulfillmentError):
    """What the request names exists, but its state refuses the request."""


class InvalidOrder(FulfillmentError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid order: " + "; ".join(problems))


class OrderAlreadyExists(Conflict):
    pass


class OrderNotFound(NotFound):
    pass


class PickNotAllowed(Conflict):
    pass


class PickTaskNotFound(NotFound, PickNotAllowed):
    pass


class InvalidRequest(FulfillmentError):
    """Ops asked for something the input does not allow (e.g. a malformed address, an unknown return reason)."""


class RequestRefused(Conflict, InvalidRequest):
    """The order's or RMA's state refuses the request (release of an order that is not on hold, cancel after
    shipping, any change to a closed order)."""


class RmaNotFound(NotFound, InvalidRequest):
    pass


class Erased(FulfillmentError):
    """What the request names existed, but its customer's data was erased (`fulfill customer forget`): 410."""


class WebhookRefused(FulfillmentError):
    """A provider webhook that is not the provider's: a missing or wrong signature, or an event replayed (already
    received, or too old). Answered 401; nothing was changed."""


class StillUnderWay(Exception):
    """Not a refusal: the order accepted the request and is carrying it out (a cancel waiting for the carrier to
    void a label, say); it has not finished within the time the caller gave. Follow the order's status."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id}: accepted and under way; follow its status")
        self.order_id = order_id
