"""What `connect()` hands Client.connect for each FULFILL_TEMPORAL_TLS_* / FULFILL_TEMPORAL_API_KEY combination,
and the errors a wrong file gives (the TLS handshakes themselves: tests/integration/test_temporal_tls.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.service import TLSConfig

from common.config import Settings
from common.temporal_tls import TemporalTLSError, temporal_connect_options
from tests.certs import CertificateAuthority


def test_plaintext_by_default() -> None:
    assert temporal_connect_options(Settings()) == {"tls": False, "api_key": None}


def test_tls_with_the_system_roots() -> None:
    options = temporal_connect_options(Settings(temporal_tls=True))
    assert options == {"tls": TLSConfig(), "api_key": None}


def test_an_api_key_turns_tls_on() -> None:
    # A bearer key must never go over plaintext, even when FULFILL_TEMPORAL_TLS was forgotten
    options = temporal_connect_options(Settings(temporal_api_key="k-1"))
    assert options == {"tls": TLSConfig(), "api_key": "k-1"}


def test_files_are_read_into_the_tls_config(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path, "ca")
    client = ca.issue("worker", client=True)
    settings = Settings(
        temporal_tls_ca_file=ca.cert_file,
        temporal_tls_cert_file=client.cert_file,
        temporal_tls_key_file=client.key_file,
        temporal_tls_server_name="frontend.test",
    )
    tls = temporal_connect_options(settings)["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.server_root_ca_cert == ca.cert_file.read_bytes()
    assert tls.client_cert == client.cert_file.read_bytes()
    assert tls.client_private_key == client.key_file.read_bytes()
    assert tls.domain == "frontend.test"


def test_a_missing_file_names_the_setting_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "ca.pem"
    with pytest.raises(TemporalTLSError) as err:
        temporal_connect_options(Settings(temporal_tls_ca_file=missing))
    assert str(err.value) == f"FULFILL_TEMPORAL_TLS_CA_FILE={missing}: cannot read it (No such file or directory)"


def test_a_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path, "ca")
    der = tmp_path / "key.der"
    der.write_bytes(b"\x30\x82\x01\x0a")
    settings = Settings(temporal_tls_cert_file=ca.cert_file, temporal_tls_key_file=der)
    with pytest.raises(TemporalTLSError, match=f"FULFILL_TEMPORAL_TLS_KEY_FILE={der}: not a PEM file"):
        temporal_connect_options(settings)


@pytest.mark.parametrize("given", ["temporal_tls_cert_file", "temporal_tls_key_file"])
def test_a_client_cert_without_its_key_is_a_settings_error(given: str) -> None:
    with pytest.raises(ValidationError) as err:
        Settings.model_validate({given: "/etc/fulfill/client.pem"})
    message = str(err.value)
    assert "FULFILL_TEMPORAL_TLS_CERT_FILE" in message and "FULFILL_TEMPORAL_TLS_KEY_FILE" in message
