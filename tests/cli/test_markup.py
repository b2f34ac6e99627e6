"""Finding 5: stored text (an ops subject "[ops] ...", a note, a reason) is shown as it is, never read as
Rich markup."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.cli.conftest import StandInApi, fulfill, ok
from workers.cli import app


def _outbox_module() -> Any:
    command = next(c for c in app.registered_commands if c.name == "outbox")
    return sys.modules[command.callback.__module__]  # type: ignore[union-attr]


class _Message:
    def __init__(self, subject: str | None, body: str) -> None:
        self.received_at = datetime(2026, 12, 1, 8, 42, 7, tzinfo=UTC)
        self.channel = "email"
        self.recipient = "ops@example.com"
        self.order_id = "EXC-1"
        self.subject = subject
        self.body = body
        self.status: str | None = None

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        return dict(vars(self))


@pytest.mark.usefixtures("shop")
def test_outbox_shows_the_ops_subject_intact(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fetch(base: str, order: str | None) -> list[_Message]:
        return [_Message("[ops] Delivery exception on order EXC-1", "body"), _Message(None, "[b]not bold[/b] sms")]

    monkeypatch.setattr(_outbox_module(), "fetch_outbox", fetch)
    output = ok(fulfill("outbox"))
    assert "[ops] Delivery exception" in output  # (the subject may wrap after it)
    assert "[b]not bold[/b] sms" in output


@pytest.mark.usefixtures("engine")
def test_order_status_shows_notes_with_brackets_intact() -> None:
    output = ok(fulfill("order", "status", "ORD-RET-7"))
    assert "[ops] carrier" in output  # (the note wraps after it)


def test_an_outcome_note_with_brackets_is_printed_as_it_is(engine: StandInApi) -> None:
    engine.view = engine.view.model_copy(update={"timeline": engine.view.timeline[1:2]})
    output = ok(fulfill("order", "cancel", "ORD-RET-7", "--reason", "x"))
    assert "([ops] carrier reports the parcel damaged" in " ".join(output.split())


def test_inventory_notes_with_brackets_are_kept(shop: str) -> None:
    ok(fulfill("inventory", "adjust", "TEE-M", "-1", "--warehouse", "LDN-1", "--reason", "[red]torn[/red] [ops]"))
    ok(fulfill("inventory", "expect", "TEE-M", "4", "--warehouse", "LDN-1", "--note", "[bold]ACME[/bold]"))
    history = ok(fulfill("inventory", "history", "TEE-M"))
    assert "[red]torn[/red]" in history and "[ops]" in history
    assert "[bold]ACME[/bold]" in ok(fulfill("inventory", "incoming"))
