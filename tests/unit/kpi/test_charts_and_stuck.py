"""The dashboard's pure parts: SVG charts carry their values; stuck orders and on-time by day."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from common.kpi import charts
from common.kpi import measures as m

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_bar_chart_has_a_bar_per_value_with_links_and_escaped_labels() -> None:
    svg = charts.bar_chart("Open <orders>", ["PICKING", "A&B"], [3, 0], ["http://ui/?q=1&x=2", "http://ui/b"])
    assert re.findall(r'class="bar" data-label="([^"]*)" data-value="([^"]*)"', svg) == [
        ("PICKING", "3"),
        ("A&amp;B", "0"),
    ]
    assert 'href="http://ui/?q=1&amp;x=2"' in svg and "Open &lt;orders&gt;" in svg and "<script" not in svg


def test_line_chart_skips_days_without_a_value() -> None:
    svg = charts.line_chart("On time", ["d1", "d2", "d3"], [100.0, None, 50.0], top=100)
    assert re.findall(r'class="point" data-label="(\w+)" data-value="([^"]*)"', svg) == [("d1", "100"), ("d3", "50")]
    assert "<polyline" in svg


def test_on_time_by_day_buckets_by_delivery_day() -> None:
    start = NOW.date() - timedelta(days=1)
    late = m.OrderFacts("A", NOW, "DELIVERED", start - timedelta(days=1), 1, ((NOW, "DELIVERED"),))
    on_time = m.OrderFacts("B", NOW, "DELIVERED", NOW.date(), 1, ((NOW, "DELIVERED"),))
    assert m.on_time_by_day([late, on_time], start, 2) == [None, 0.5]


def test_stuck_reasons() -> None:
    hour = 3600.0
    old = NOW - timedelta(hours=5)
    assert m.stuck_reason("PICKING", NOW, NOW, sla_s=hour, pick_overdue=True, threepl_late=False) == "pick overdue"
    assert m.stuck_reason("ACCEPTED_BY_3PL", NOW, NOW, sla_s=hour, pick_overdue=False, threepl_late=True) == "3PL late"
    assert m.stuck_reason("BACKORDERED", old, NOW, sla_s=hour, pick_overdue=False, threepl_late=False) == (
        "BACKORDERED for 5.0 h"
    )
    assert m.stuck_reason("BACKORDERED", NOW, NOW, sla_s=hour, pick_overdue=False, threepl_late=False) is None
    assert m.stuck_reason("IN_TRANSIT", old, NOW, sla_s=hour, pick_overdue=False, threepl_late=False) is None
