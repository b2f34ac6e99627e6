"""SMS opt-outs (the sms_opt_outs table): the numbers that texted STOP, or START again, checked before every SMS.

The keywords are Twilio's default opt-out keywords (https://help.twilio.com/articles/223134027): the whole body
of the message, whatever its case and the spaces around it. A number Twilio refused as unsubscribed (error
21610) is recorded as opted out too, with the keyword "21610".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select

from common.db import tables as t
from common.db.database import Database, insert, utc_now
from common.db.inputs import require_text

OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
# What Twilio says when it refuses a message to a number that opted out
UNSUBSCRIBED_CODE = 21610

Keyword = Literal["stop", "start", "help"]


def keyword_of(body: str, opt_out_type: str | None = None) -> tuple[Keyword | None, str]:
    """What an inbound message asks: ("stop" | "start" | "help" | None, the keyword as texted). Twilio's
    Advanced Opt-Out names it in `OptOutType` (STOP, START, HELP); else the body is matched as Twilio does by
    default, the whole message being one keyword ("stop", " Stop! " too; not "please stop")."""
    word = body.strip().rstrip(".!").strip().upper()
    kind = (opt_out_type or "").strip().upper()
    if kind == "STOP" or (not kind and word in OPT_OUT_KEYWORDS):
        return "stop", word or kind
    if kind == "START" or (not kind and word in OPT_IN_KEYWORDS):
        return "start", word or kind
    if kind == "HELP" or (not kind and word in HELP_KEYWORDS):
        return "help", word or kind
    return None, word


@dataclass(frozen=True)
class SmsOptOut:
    phone: str
    opted_out: bool  # False: texted START (or YES, UNSTOP) after opting out
    keyword: str  # what set it: STOP, START, ..., or 21610 (Twilio refused a message as unsubscribed)
    updated_at: datetime


class SmsOptOutStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, phone: str, *, opted_out: bool, keyword: str) -> None:
        """The number opted out (or in again). Locking: the one row (one upsert)."""
        require_text("phone number", phone)
        o = t.sms_opt_outs
        row = {"phone": phone, "opted_out": opted_out, "keyword": keyword[:16] or "?", "updated_at": utc_now()}

        async def op(conn: Any) -> None:
            stmt = insert(conn, o).values(row)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[o.c.phone],
                    set_={"opted_out": opted_out, "keyword": row["keyword"], "updated_at": row["updated_at"]},
                )
            )

        await self._db.write(op, "record an SMS opt-" + ("out" if opted_out else "in"))

    async def get(self, phone: str) -> SmsOptOut | None:
        rows = await self._db.read(select(t.sms_opt_outs).where(t.sms_opt_outs.c.phone == phone))
        if not rows:
            return None
        r = rows[0]
        return SmsOptOut(r.phone, bool(r.opted_out), r.keyword, r.updated_at)

    async def is_opted_out(self, phone: str) -> bool:
        found = await self.get(phone)
        return found is not None and found.opted_out
