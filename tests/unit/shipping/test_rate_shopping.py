"""Rate shopping against the promised date: the cheapest (or fastest, or preferred) rate that arrives in time,
the fastest when none does, and a note that names every rate passed over and why."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from common.integrations.carrier_api import CarrierError, CarrierRate
from common.shipping.rate_shopping import arrives, choose

TODAY = date(2026, 12, 1)


def rate(rid: str, carrier: str, service: str, cents: int, days: int | None, on: date | None = None) -> CarrierRate:
    when = datetime(on.year, on.month, on.day, 18, tzinfo=UTC) if on else None
    return CarrierRate(
        id=rid, carrier=carrier, service=service, rate_cents=cents, delivery_days=days, delivery_date=when
    )


RATES = [
    rate("ground", "SandboxPost", "Ground", 510, 5),
    rate("priority", "SandboxPost", "Priority", 980, 2),
    rate("saver", "QuickShip", "Saver", 790, 3),
    rate("overnight", "QuickShip", "Overnight", 2450, 1),
]


@pytest.mark.parametrize(
    ("promised", "strategy", "chosen"),
    [
        (date(2026, 12, 8), "cheapest", "ground"),  # a week: the cheapest of all arrives in time
        (date(2026, 12, 4), "cheapest", "saver"),  # 3 days: ground is too slow, saver beats priority on price
        (date(2026, 12, 2), "cheapest", "overnight"),  # tomorrow: only overnight makes it
        (date(2026, 12, 8), "fastest", "overnight"),
        (date(2026, 12, 8), "preferred", "saver"),  # QuickShip preferred: its cheapest in time
        (date(2026, 12, 2), "preferred", "overnight"),
    ],
)
def test_the_rate_keeps_the_promise(promised: date, strategy: str, chosen: str) -> None:
    choice = choose(RATES, promised=promised, label_day=TODAY, strategy=strategy, preferred=["quickship"])  # type: ignore[arg-type]
    assert choice.rate.id == chosen
    assert f"promised by {promised:%Y-%m-%d}" in choice.note


def test_the_note_names_the_choice_and_why_each_other_rate_was_passed_over() -> None:
    choice = choose(RATES, promised=date(2026, 12, 4), label_day=TODAY)
    assert choice.note.startswith(
        "rate QuickShip Saver $7.90 arrives 2026-12-04 chosen, cheapest that keeps the promise"
    )
    assert "SandboxPost Ground $5.10 arrives 2026-12-06: misses the promise" in choice.note
    assert "SandboxPost Priority $9.80 arrives 2026-12-03: dearer" in choice.note
    assert "QuickShip Overnight $24.50 arrives 2026-12-02: dearer" in choice.note


def test_preferred_carriers_win_only_among_rates_in_time() -> None:
    choice = choose(RATES, promised=date(2026, 12, 4), label_day=TODAY, strategy="preferred", preferred=["SandboxPost"])
    assert choice.rate.id == "priority"
    assert "QuickShip Saver $7.90 arrives 2026-12-04: not a preferred carrier" in choice.note


def test_when_no_rate_arrives_in_time_the_fastest_is_bought_and_the_risk_said() -> None:
    choice = choose(RATES, promised=TODAY, label_day=TODAY)
    assert choice.rate.id == "overnight"
    assert "no rate arrives by the promise, which is at risk" in choice.note


def test_the_carriers_own_delivery_date_beats_the_day_count() -> None:
    weekend = rate("slow-but-dated", "X", "Y", 100, 1, on=date(2026, 12, 7))
    assert arrives(weekend, TODAY) == date(2026, 12, 7)
    choice = choose([weekend, RATES[2]], promised=date(2026, 12, 4), label_day=TODAY)
    assert choice.rate.id == "saver"
    assert "X Y $1.00 arrives 2026-12-07: misses the promise" in choice.note


def test_a_rate_without_any_delivery_estimate_never_counts_as_in_time() -> None:
    unknown = rate("unknown", "Z", "Mystery", 1, None)
    assert choose([unknown, RATES[0]], promised=date(2026, 12, 30), label_day=TODAY).rate.id == "ground"
    assert choose([unknown], promised=date(2026, 12, 30), label_day=TODAY).rate.id == "unknown"  # all there is


def test_no_rates_is_a_carrier_error() -> None:
    with pytest.raises(CarrierError, match="no rates"):
        choose([], promised=TODAY, label_day=TODAY)
