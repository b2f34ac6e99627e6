"""`fulfill 3pl parcels`: the parcels handed to 3PLs, where each stands and whether the 3PL is late with it.
The database alone (no Temporal needed)."""

from __future__ import annotations

from typing import Annotated

import typer

from common.api import FulfillmentApi
from common.api.threepl import ThreePLParcelView
from common.cli._base import out, print_json, run_async
from common.cli._output import key, stamp, table, time_column
from common.config import get_settings
from common.errors import InvalidRequest
from common.privacy import connect
from common.threepl.contracts import ThreePLState

STATES = ", ".join(s.value for s in ThreePLState)


def register_parcels(app: typer.Typer) -> None:
    """Add `parcels` to `app` (the `fulfill 3pl` sub-app)."""
    app.command("parcels")(threepl_parcels)


@run_async
async def threepl_parcels(
    provider: Annotated[str | None, typer.Option("--provider", help="Only this 3PL, e.g. shipbob.")] = None,
    state: Annotated[
        list[str] | None, typer.Option("--state", help=f"Only parcels in this state (repeatable): {STATES}.")
    ] = None,
    late: Annotated[bool, typer.Option("--late", help="Only the parcels the 3PL is late with.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Parcels at 3PLs, newest submission first: state (LATE when past its due date), when it is due (accepted by
    submission + FULFILL_THREEPL_ACCEPT_SLA, shipped by acceptance + FULFILL_THREEPL_SHIP_SLA), and its carrier and
    tracking number once shipped, or the 3PL's reason for a hold or a rejection."""
    states = [_state(s) for s in state or []]
    settings = get_settings()
    # Lazy: the listing reads the database only, so it works while Temporal is away
    async with await FulfillmentApi.connect(settings, client=await connect(settings, lazy=True)) as api:
        views = await api.threepl_parcels(provider=provider, states=states or None, late_only=late, limit=limit)
    if as_json:
        print_json(views)
        return
    if not views:
        out.print("no late parcels at 3PLs" if late else "no parcels at 3PLs", markup=False, highlight=False)
        return
    # Narrow enough for 80 columns: the 3PL, warehouse and times are in --json
    shown = table(key("reference"), key("state"), time_column("due (UTC)"), "tracking, or why")
    for v in views:
        state_text = v.state.value + (" LATE" if v.late else "")
        tracking = f"{v.carrier or ''} {v.tracking_number}".strip() if v.tracking_number else None
        shown.add_row(v.reference_id, state_text, _due(v), tracking or v.reason or "-")
    out.print(shown)


def _due(v: ThreePLParcelView) -> str:
    """The due date its state waits for: acceptance while submitted, shipping while accepted or on hold."""
    if v.state == ThreePLState.SUBMITTED:
        return stamp(v.accept_due_at)
    if v.state in (ThreePLState.ACCEPTED, ThreePLState.ON_HOLD):
        return stamp(v.ship_due_at)
    return "-"


def _state(text: str) -> ThreePLState:
    try:
        return ThreePLState(text.strip().lower())
    except ValueError:
        raise InvalidRequest(f"--state {text!r}: not a 3PL parcel state (one of {STATES})") from None
