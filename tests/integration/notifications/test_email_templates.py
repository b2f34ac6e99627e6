"""The worker's notifications use the settings' templates: an override folder (FULFILL_EMAIL_TEMPLATES_DIR) changes
what the sandbox's SMTP and SMS servers receive, and a broken one stops NotificationActivities (the worker) at
start. The templates themselves: tests/unit/notifications/test_message_templates.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.notifications import NotificationActivities
from common.config import Settings
from common.integrations.email import EmailSender
from common.integrations.sms import SmsSender
from common.messages import MessageTemplateError
from common.models import Channel, Customer, NotificationEvent, NotifyRequest
from common.store import Store
from sandbox import SandboxServers, free_port_settings

OVERRIDE = """{% extends "layout.txt" %}
{% block subject %}{{ brand.name }}: order {{ order_id }} is on the road{{ parcel }}{% endblock %}
{% block message %}{{ carrier }} has order {{ order_id }}: {{ tracking_url }}{% endblock %}
"""


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[SandboxServers]:
    settings = free_port_settings(var_dir=tmp_path)
    async with SandboxServers(settings, db_path=tmp_path / "sb.db", sms_callback_delays=(0.01, 0.02)) as sb:
        yield sb


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'fulfill.db'}")
    try:
        yield s
    finally:
        await s.close()


async def test_an_override_folder_changes_what_the_customer_gets(
    store: Store, sandbox: SandboxServers, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "shipped.txt").write_text(OVERRIDE)
    settings = sandbox.settings_for_clients().model_copy(
        update={"email_templates_dir": templates, "email_brand_name": "Acme"}
    )
    email, sms = EmailSender(settings, timeout=5), SmsSender(settings)
    try:
        activities = NotificationActivities(store, email, sms, settings)
        customer = Customer(
            id="C-1", name="Ada Lovelace", email="ada@example.com", phone="+15555550100", channels=list(Channel)
        )
        request = NotifyRequest(
            order_id="ORD-1",
            event=NotificationEvent.SHIPPED,
            customer=customer,
            channels=list(Channel),
            context={"carrier": "SandboxPost", "tracking_number": "SBX1", "tracking_url": "https://t.example/SBX1"},
        )
        result = await ActivityEnvironment().run(activities.notify_customer, request)
    finally:
        await email.close()
        await sms.close()
    assert sorted(result.sent) == [Channel.EMAIL, Channel.SMS]
    [mail] = [m for m in sandbox.outbox("ORD-1") if m.channel == "email"]
    [text] = [m for m in sandbox.outbox("ORD-1") if m.channel == "sms"]
    assert mail.subject == "Acme: order ORD-1 is on the road" and mail.html
    assert "SandboxPost has order ORD-1: https://t.example/SBX1" in mail.body and "-- The Acme team" in mail.body
    assert text.body == "SandboxPost has order ORD-1: https://t.example/SBX1"


def test_a_broken_override_stops_the_worker_at_start(tmp_path: Path) -> None:
    (tmp_path / "delivered.txt").write_text("{% block subject %}{{ order_id {% endblock %}")
    settings = Settings(email_templates_dir=tmp_path)
    with pytest.raises(MessageTemplateError, match=re.escape(f"email template {tmp_path / 'delivered.txt'}, line 1: ")):
        NotificationActivities(None, None, None, settings)  # type: ignore[arg-type]  # only the templates matter
