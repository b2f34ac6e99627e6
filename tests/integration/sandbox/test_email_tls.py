"""SMTP credentials never travel in the clear: with a username and password the EmailSender upgrades with
STARTTLS (verified against FULFILL_SMTP_TLS_CA_FILE) before AUTH, and a relay that does not offer STARTTLS gets
an error, not the password. A real aiosmtpd relay with a certificate made for the test."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import Settings
from common.integrations.email import EmailSender, EmailTransientError
from sandbox.store import SandboxStore
from tests.certs import CertificateAuthority
from tests.integration.sandbox.test_sandbox import Relay, email, subjects

PASSWORD = "s3cret-relay-pass"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SandboxStore]:
    store = SandboxStore(tmp_path / "relay.db")
    yield store
    store.close()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path, "relay-ca")


def relay_tls(ca: CertificateAuthority) -> ssl.SSLContext:
    issued = ca.issue("relay.test")  # valid for 127.0.0.1 too, the address the sender dials
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert_file, issued.key_file)
    return context


def password_on_the_wire(relay: Relay) -> bool:
    """The password as it would go out in AUTH PLAIN or AUTH LOGIN, or as it is."""
    forms = [
        PASSWORD.encode(),
        base64.b64encode(PASSWORD.encode()),
        base64.b64encode(f"\0fulfill\0{PASSWORD}".encode()),
    ]
    return any(form in relay.wire for form in forms)


async def test_credentials_go_after_starttls_and_mail_arrives(store: SandboxStore, ca: CertificateAuthority) -> None:
    async with Relay(store, password=PASSWORD, tls=relay_tls(ca)) as relay:
        settings = relay.settings(smtp_username="fulfill", smtp_password=PASSWORD, smtp_tls_ca_file=ca.cert_file)
        sender = EmailSender(settings)
        await email(sender, 1)
        await email(sender, 2)  # on the same connection: one STARTTLS, one login
        assert subjects(relay) == ["Message 1", "Message 2"]
        assert (len(relay.connections), relay.logins, relay.tls_logins) == (1, 1, 1)
        assert b"STARTTLS" in relay.wire and b"AUTH" not in relay.wire
        assert not password_on_the_wire(relay)
        await sender.close()


async def test_a_relay_without_starttls_never_gets_the_password(store: SandboxStore) -> None:
    with pytest.warns(UserWarning, match="Requiring AUTH while not requiring TLS"):
        relay = Relay(store, password=PASSWORD)  # offers AUTH over plaintext, and no STARTTLS
        async with relay:
            sender = EmailSender(relay.settings(smtp_username="fulfill", smtp_password=PASSWORD))
            with pytest.raises(EmailTransientError, match="does not offer STARTTLS") as err:
                await email(sender, 1)
    assert f"127.0.0.1:{relay.port}" in str(err.value)
    assert "FULFILL_SMTP_USE_TLS" in str(err.value)
    assert relay.logins == 0 and b"AUTH" not in relay.wire
    assert not password_on_the_wire(relay)
    assert subjects(relay) == []


async def test_a_relay_certificate_the_ca_file_does_not_vouch_for_fails(
    store: SandboxStore, ca: CertificateAuthority, tmp_path: Path
) -> None:
    other = CertificateAuthority(tmp_path, "other-ca")
    async with Relay(store, password=PASSWORD, tls=relay_tls(ca)) as relay:
        settings = relay.settings(smtp_username="fulfill", smtp_password=PASSWORD, smtp_tls_ca_file=other.cert_file)
        with pytest.raises(EmailTransientError, match="CERTIFICATE_VERIFY_FAILED"):
            await email(EmailSender(settings), 1)
        assert relay.logins == 0 and not password_on_the_wire(relay)


async def test_starttls_without_credentials_when_asked(store: SandboxStore, ca: CertificateAuthority) -> None:
    async with Relay(store, tls=relay_tls(ca)) as relay:
        sender = EmailSender(relay.settings(smtp_starttls=True, smtp_tls_ca_file=ca.cert_file))
        await email(sender, 1)
        assert subjects(relay) == ["Message 1"]
        assert b"STARTTLS" in relay.wire and b"MAIL FROM" not in relay.wire
        await sender.close()


def test_a_ca_file_that_cannot_be_read_stops_the_sender_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "relay-ca.pem"
    with pytest.raises(ValueError, match=f"FULFILL_SMTP_TLS_CA_FILE={missing}: not a readable PEM CA file"):
        EmailSender(Settings(smtp_tls_ca_file=missing))
