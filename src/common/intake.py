"""Order intake: parse and validate an order against the contract in docs/design.md before anything starts."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from common.errors import InvalidOrder
from common.models import Order


def parse_order(data: str | bytes | dict[str, Any] | Order) -> Order:
    """Validate an order against the intake contract; InvalidOrder names every field that is wrong."""
    if isinstance(data, Order):
        return data
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise InvalidOrder([f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}"]) from None
    if not isinstance(data, dict):
        raise InvalidOrder(["the order must be a JSON object"])
    try:
        return Order.model_validate(data)
    except ValidationError as err:
        raise InvalidOrder([describe_error(e) for e in err.errors()]) from None


def describe_error(error: Any, prefix: str = "") -> str:
    """One pydantic error as `field.path: what is wrong`."""
    where = ".".join(str(p) for p in (prefix, *error["loc"]) if p != "") or "order"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    if error["type"] == "string_pattern_mismatch" and where.endswith("phone"):
        return f"{where}: must be in E.164 form, e.g. +15555550100 (got {error['input']!r})"
    if error["type"] == "enum":
        return f"{where}: {message} (got {error['input']!r})"
    return f"{where}: {message}"
