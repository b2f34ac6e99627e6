"""Order builders for tests (valid by default; tests change one thing at a time)."""

from __future__ import annotations

from typing import Any

from common.models import Order


def order_dict(order_id: str = "ORD-1001", lines: dict[str, int] | None = None, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": order_id,
        "customer": {
            "id": "C-42",
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "+15555550100",
            "channels": ["email", "sms"],
        },
        "ship_to": {
            "name": "Ada Lovelace",
            "line1": "1 Analytical Way",
            "line2": None,
            "city": "London",
            "region": "LDN",
            "postal_code": "N1 9GU",
            "country": "GB",
        },
        # The price paid: 12.50 a unit, whatever the catalogue says (refunds pay back this)
        "lines": [
            {"sku": sku, "quantity": qty, "unit_price": "12.50"} for sku, qty in (lines or {"MUG-RED": 2}).items()
        ],
        "shipping_speed": "standard",
        "payment": {"reference": f"pi_test_{order_id.replace('-', '_')}", "currency": "USD"},
    }
    data.update(changes)
    return data


def sample_order(order_id: str = "ORD-1001", lines: dict[str, int] | None = None, **changes: Any) -> Order:
    return Order.model_validate(order_dict(order_id, lines, **changes))
