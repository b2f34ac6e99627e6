"""Outages of the sandbox services, driven through the engine's real adapters (aiosmtplib's pooled EmailSender,
the twilio SDK, the carrier adapter over the easypost SDK, Stripe's SDK), the HTTP control and the real
`fulfill dev` CLI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from common.config import Settings
from common.integrations.carrier import CarrierClient, CarrierTransientError
from common.integrations.email import EmailSender, EmailTransientError
from common.integrations.payments import PaymentUnavailable, payments_gateway
from common.integrations.sms import SmsSender, SmsTransientError
from common.models import Address
from sandbox import SandboxServers, free_port_settings
from tests.integration.conftest import Cli

SHIP_TO = Address(name="A", line1="1 Analytical Way", city="London", region="LDN", postal_code="N1 9GU", country="GB")
FROM = {"name": "Main warehouse", "street1": "5 Depot Rd", "city": "Leeds", "zip": "LS1 1AA", "country": "GB"}


@pytest.fixture
async def sb(tmp_path: Path) -> AsyncIterator[SandboxServers]:
    settings = free_port_settings(
        var_dir=tmp_path,
    )
    async with SandboxServers(settings, db_path=tmp_path / "sb.db", sms_callback_delays=(0.01, 0.02)) as sb:
        yield sb


async def email(sender: EmailSender, n: int) -> str:
    return await sender.send(
        to="ada@example.com",
        subject=f"Message {n}",
        text="t",
        html="<p>t</p>",
        message_id=f"<m{n}@fulfill>",
        headers={"X-Order-Id": "ORD-1"},
    )


# ---------------------------------------------------------------------------------------------------------
# Each service fails transiently during its outage and works again after it


async def test_smtp_outage_is_transient_on_pooled_and_new_connections(sb: SandboxServers) -> None:
    sender = EmailSender(sb.settings_for_clients())
    await email(sender, 1)  # leaves a pooled connection open
    sb.start_outage("smtp")
    with pytest.raises(EmailTransientError) as pooled:
        await email(sender, 2)
    assert pooled.value.code == 421
    fresh = EmailSender(sb.settings_for_clients())
    with pytest.raises(EmailTransientError) as new:
        await email(fresh, 3)
    assert new.value.code == 421

    assert sb.end_outage("smtp") is True
    await email(sender, 4)
    await email(fresh, 5)
    assert [m.subject for m in sb.outbox()] == ["Message 1", "Message 4", "Message 5"]
    await sender.close()
    await fresh.close()


async def test_smtp_outage_over_when_its_time_is_up(sb: SandboxServers) -> None:
    sender = EmailSender(sb.settings_for_clients())
    sb.start_outage("smtp", 0.3)
    with pytest.raises(EmailTransientError):
        await email(sender, 1)
    await asyncio.sleep(0.35)
    await email(sender, 2)
    assert sb.outages() == {}
    assert [m.subject for m in sb.outbox()] == ["Message 2"]
    await sender.close()


async def test_sms_outage_is_a_twilio_503(sb: SandboxServers) -> None:
    sms = SmsSender(sb.settings_for_clients())
    sb.start_outage("sms", 60)
    with pytest.raises(SmsTransientError) as err:
        await sms.send(to="+15555550100", body="hi", status_callback=None)
    assert err.value.code == 20503 and "503" in str(err.value)
    assert sb.outbox() == []
    sb.end_outage("sms")
    sid = await sms.send(to="+15555550100", body="hi", status_callback=None)
    assert [m.provider_id for m in sb.outbox()] == [sid]
    await sms.close()


async def test_carrier_outage_fails_every_api_call(sb: SandboxServers) -> None:
    carrier = CarrierClient(sb.settings_for_clients())
    try:
        shipment = await carrier.create_shipment(
            reference="label:ORD-1:1", to_address=SHIP_TO, from_address=FROM, parcel={"weight": 16.0}
        )
        bought = await carrier.buy(shipment.id, shipment.rates[0].id)
        sb.start_outage("carrier")
        calls = [
            carrier.create_shipment(reference="r", to_address=SHIP_TO, from_address=FROM, parcel={"weight": 1.0}),
            carrier.get_shipment(shipment.id),
            carrier.get_tracker(bought.tracking_code or ""),
            carrier.refund(shipment.id),
        ]
        for call in calls:
            with pytest.raises(CarrierTransientError) as err:
                await call
            assert err.value.status == 503 and err.value.code == "SERVICE.UNAVAILABLE"
        sb.end_outage("carrier")
        assert (await carrier.get_tracker(bought.tracking_code or "")).tracking_code == bought.tracking_code
        assert (await carrier.get_shipment(shipment.id)).refund_status is None  # the refund never reached it
    finally:
        await carrier.close()


async def test_payments_outage_is_unavailable_then_the_refund_goes_through(sb: SandboxServers) -> None:
    gateway = payments_gateway(sb.settings_for_clients())
    refund = {
        "key": "refund:RMA-ORD-1-1",
        "order_id": "ORD-1",
        "payment_reference": "pi_test_ORD_1",
        "amount_cents": 1200,
        "currency": "USD",
        "reason": "damaged",
    }
    try:
        sb.start_outage("payments")
        with pytest.raises(PaymentUnavailable, match="503"):
            await gateway.refund(**refund)
        assert sb.refunds() == []
        sb.end_outage("payments")
        receipt = await gateway.refund(**refund)
        assert (receipt.amount_cents, receipt.already_refunded) == (1200, False)
        assert [r["id"] for r in sb.refunds()] == [receipt.refund_id]
    finally:
        await gateway.close()


def test_unknown_service_and_bad_durations_are_refused(tmp_path: Path) -> None:
    sb = SandboxServers(Settings(var_dir=tmp_path))  # the in-process API needs no running servers
    for service, seconds in [("fax", None), ("SMTP", None), ("smtp", 0), ("smtp", -5), ("smtp", float("nan"))]:
        with pytest.raises(ValueError) as err:
            sb.start_outage(service, seconds)
        if service != "smtp":
            assert "smtp, sms, carrier, payments" in str(err.value)
    with pytest.raises(ValueError, match="smtp, sms, carrier, payments"):
        sb.end_outage("fax")
    assert sb.outages() == {}
    assert sb.end_outage("sms") is False


# ---------------------------------------------------------------------------------------------------------
# HTTP control


async def test_http_control_starts_lists_and_ends_outages(sb: SandboxServers) -> None:
    url = f"{sb.http_url}/_sandbox/outages"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"service": "carrier", "seconds": 600}) as resp:
            assert resp.status == 201
        async with http.post(url, json={"service": "payments"}) as resp:
            assert resp.status == 201
        async with http.get(url) as resp:
            listed = (await resp.json())["outages"]
        assert [o["service"] for o in listed] == ["carrier", "payments"]
        assert 595 < listed[0]["seconds_left"] <= 600 and listed[0]["ends_at"].endswith("Z")
        assert listed[1]["seconds_left"] is None and listed[1]["ends_at"] is None
        carrier_end = sb.outages()["carrier"]
        assert carrier_end is not None and abs(carrier_end - (time.time() + 600)) < 5
        assert sb.outages()["payments"] is None

        async with http.delete(f"{url}/carrier") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["ended"] is True and [o["service"] for o in body["outages"]] == ["payments"]
        async with http.delete(f"{url}/carrier") as resp:
            assert (await resp.json())["ended"] is False
    assert list(sb.outages()) == ["payments"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"service": "fax"}', "smtp, sms, carrier, payments"),
        (b'{"service": "smtp", "seconds": -1}', "positive"),
        (b'{"service": "smtp", "seconds": 0}', "positive"),
        (b'{"service": "smtp", "seconds": "600"}', "number"),
        (b'{"service": "smtp", "seconds": true}', "number"),
        (b'{"service": "smtp", "seconds": NaN}', "positive"),
        (b'{"seconds": 5}', "service is required"),
        (b'{"service": "smtp", "minutes": 5}', "minutes"),
        (b'["smtp"]', "JSON object"),
        (b"smtp for 5 minutes", "JSON"),
    ],
)
async def test_http_control_refuses_bad_input_and_changes_nothing(sb: SandboxServers, body: bytes, detail: str) -> None:
    sb.start_outage("sms")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sb.http_url}/_sandbox/outages", data=body, headers={"Content-Type": "application/json"}) as resp,
    ):
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"
        problem = await resp.json(content_type=None)
    assert problem["title"] and detail in problem["detail"]
    assert list(sb.outages()) == ["sms"]


async def test_http_control_refuses_ending_an_unknown_service(sb: SandboxServers) -> None:
    async with aiohttp.ClientSession() as http, http.delete(f"{sb.http_url}/_sandbox/outages/fax") as resp:
        assert resp.status == 400 and resp.content_type == "application/problem+json"
        assert "smtp, sms, carrier, payments" in (await resp.json(content_type=None))["detail"]


# ---------------------------------------------------------------------------------------------------------
# The real `fulfill dev` CLI


async def run(cli: Cli, *args: str) -> tuple[int, str, str]:
    done = await asyncio.to_thread(cli, *args)  # the sandbox answers on this test's event loop
    return done.returncode, done.stdout, done.stderr


async def test_cli_starts_lists_and_ends_outages(sb: SandboxServers) -> None:
    cli = Cli(sb.settings_for_clients())
    code, out, err = await run(cli, "dev", "outages")
    assert code == 0 and "no outages" in out, err

    code, out, err = await run(cli, "dev", "outage", "carrier", "--for", "600")
    assert code == 0 and "carrier is down for 10m 00s" in out, err
    code, out, err = await run(cli, "dev", "outage", "smtp")
    assert code == 0 and "smtp is down until ended" in out, err
    assert set(sb.outages()) == {"smtp", "carrier"} and sb.outages()["smtp"] is None

    code, out, err = await run(cli, "dev", "outages")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (["smtp"], ["carrier"])}
    assert "until ended" in rows["smtp"] and "9m 5" in rows["carrier"]
    code, out, _ = await run(cli, "dev", "outages", "--json")
    assert [(o["service"], o["ends_at"] is None) for o in json.loads(out)] == [("smtp", True), ("carrier", False)]

    code, out, err = await run(cli, "dev", "outage", "smtp", "--end")
    assert code == 0 and "outage of smtp ended" in out, err
    code, out, _ = await run(cli, "dev", "outage", "smtp", "--end")
    assert code == 0 and "nothing changed" in out
    assert list(sb.outages()) == ["carrier"]


async def test_cli_refuses_bad_input_and_changes_nothing(sb: SandboxServers) -> None:
    cli = Cli(sb.settings_for_clients())
    sb.start_outage("sms")
    for args, says in [
        (("fax",), "smtp, sms, carrier, payments"),
        (("fax", "--end"), "smtp, sms, carrier, payments"),
        (("smtp", "--for", "0"), "positive"),
        (("smtp", "--for", "-3"), "positive"),
        (("smtp", "--for", "5", "--end"), "not both"),
        (("sms", "--for", "soon"), "--for"),
    ]:
        code, _, err = await run(cli, "dev", "outage", *args)
        assert code == 2 and says in err, (args, err)
        assert "Traceback" not in err
    assert list(sb.outages()) == ["sms"] and sb.outages()["sms"] is None


async def test_cli_says_when_the_sandbox_is_not_running(tmp_path: Path) -> None:
    async with SandboxServers(
        free_port_settings(
            var_dir=tmp_path,
        ),
        db_path=":memory:",
    ) as gone:
        settings = gone.settings_for_clients()
    cli = Cli(settings)  # its port is closed now
    for args in (("outage", "smtp", "--for", "5"), ("outages",)):
        code, _, err = await run(cli, "dev", *args)
        assert code == 1 and "not reachable" in err and "make run" in err, err
        assert "Traceback" not in err
