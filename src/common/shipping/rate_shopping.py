"""Rate shopping that keeps the promise: of the carrier's rates, the ones that arrive by the order's promised
delivery date, then the strategy picks one (cheapest, fastest, or the preferred carriers first). When no rate
arrives in time the fastest is bought and the note says the promise is at risk. The note names the choice
and every rate passed over, and why: it goes into the order's timeline.

A rate's arrival is its own `delivery_date` when the carrier gives one, else the label day plus its
`delivery_days` (calendar days, as the promise is counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from common.integrations.carrier_api import CarrierError, CarrierRate

RateStrategy = Literal["cheapest", "fastest", "preferred"]
_FAR = date.max


@dataclass(frozen=True)
class RateChoice:
    rate: CarrierRate
    note: str  # for the timeline: the choice, the promise, the alternatives passed over and why


def arrives(rate: CarrierRate, label_day: date) -> date | None:
    """The day the rate delivers if the label is bought on `label_day`; None if the carrier does not say."""
    if rate.delivery_date is not None:
        return rate.delivery_date.date()
    if rate.delivery_days is not None:
        return label_day + timedelta(days=rate.delivery_days)
    return None


def choose(
    rates: Sequence[CarrierRate],
    *,
    promised: date,
    label_day: date,
    strategy: RateStrategy = "cheapest",
    preferred: Sequence[str] = (),
) -> RateChoice:
    """The rate to buy for a parcel promised by `promised`, labelled on `label_day`. CarrierError: no rates."""
    if not rates:
        raise CarrierError("the carrier offered no rates")

    def arrival(r: CarrierRate) -> date:
        return arrives(r, label_day) or _FAR

    def cheapest(r: CarrierRate) -> tuple[int, date, str, str]:
        return (r.rate_cents, arrival(r), r.carrier, r.service)

    def fastest(r: CarrierRate) -> tuple[date, int, str, str]:
        return (arrival(r), r.rate_cents, r.carrier, r.service)

    in_time = [r for r in rates if arrival(r) <= promised]
    wanted = {p.strip().lower() for p in preferred if p.strip()}
    if not in_time:
        chosen, why = min(rates, key=fastest), "fastest: no rate arrives by the promise, which is at risk"
    elif strategy == "fastest":
        chosen, why = min(in_time, key=fastest), "fastest that keeps the promise"
    elif strategy == "preferred" and (favourites := [r for r in in_time if r.carrier.lower() in wanted]):
        chosen, why = min(favourites, key=cheapest), "cheapest preferred carrier that keeps the promise"
    else:
        chosen, why = min(in_time, key=cheapest), "cheapest that keeps the promise"
    passed = [f"{_rate(r, label_day)}: {_why_not(r, chosen, promised, label_day, strategy, wanted)}" for r in rates]
    note = f"rate {_rate(chosen, label_day)} chosen, {why} (promised by {promised:%Y-%m-%d})"
    others = [p for r, p in zip(rates, passed, strict=True) if r is not chosen]
    if others:
        note += "; passed over: " + "; ".join(others)
    return RateChoice(chosen, note)


def _rate(r: CarrierRate, label_day: date) -> str:
    day = arrives(r, label_day)
    when = f"arrives {day:%Y-%m-%d}" if day is not None else "no delivery date"
    return f"{r.carrier} {r.service} ${r.rate_cents / 100:.2f} {when}"


def _why_not(
    r: CarrierRate, chosen: CarrierRate, promised: date, label_day: date, strategy: str, wanted: set[str]
) -> str:
    day = arrives(r, label_day)
    if day is None or day > promised:
        return "misses the promise"
    if strategy == "preferred" and wanted and chosen.carrier.lower() in wanted and r.carrier.lower() not in wanted:
        return "not a preferred carrier"
    chosen_day = arrives(chosen, label_day) or _FAR
    if strategy == "fastest" or chosen_day > promised:  # the choice went by speed
        return "slower" if day > chosen_day else "dearer"
    return "dearer" if r.rate_cents > chosen.rate_cents else "slower"
