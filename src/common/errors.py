"""Refusals the engine reports to callers; each message says why, and nothing was changed."""

from __future__ import annotations


class FulfillmentError(Exception):
    """A request the engine refused; the message says why. Nothing was changed."""


class InvalidOrder(FulfillmentError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid order: " + "; ".join(problems))


class OrderAlreadyExists(FulfillmentError):
    pass


class OrderNotFound(FulfillmentError):
    pass


class PickNotAllowed(FulfillmentError):
    pass


class InvalidRequest(FulfillmentError):
    """Ops asked for something the order's state or the input does not allow (e.g. release of an order that is
    not on hold, cancel after shipping, a malformed address)."""
