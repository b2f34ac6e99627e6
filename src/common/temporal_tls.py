"""How a process reaches Temporal over the network: TLS (system roots or a private CA), mTLS client certificates,
and a Temporal Cloud API key, from the FULFILL_TEMPORAL_TLS_* / FULFILL_TEMPORAL_API_KEY settings.

`temporal_connect_options(settings)` gives the `tls=` and `api_key=` arguments of `Client.connect`; common.temporal's
`connect()` passes them on, so every process (worker, HTTP API, CLI, dev stack) connects the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.service import TLSConfig

from common.config import Settings


class TemporalTLSError(ValueError):
    """A TLS file named by a setting cannot be used; the message names the setting and the path."""


def tls_enabled(settings: Settings) -> bool:
    """TLS on when asked for, or when anything only TLS makes sense with is set: a CA, a client certificate, a
    server name, or an API key (a bearer key sent in the clear is a key given away)."""
    return bool(
        settings.temporal_tls
        or settings.temporal_tls_ca_file
        or settings.temporal_tls_cert_file
        or settings.temporal_tls_key_file
        or settings.temporal_tls_server_name
        or settings.temporal_api_key
    )


def temporal_connect_options(settings: Settings) -> dict[str, Any]:
    """`tls` (a TLSConfig, or False for plaintext) and `api_key` (None: no key) for `Client.connect`. Reads the
    PEM files now, so a missing or unreadable one fails at start with TemporalTLSError, not at the first call."""
    if not tls_enabled(settings):
        # False, not None: the SDK's None means "TLS if there is an API key", a rule that belongs here
        return {"tls": False, "api_key": None}
    config = TLSConfig(
        server_root_ca_cert=_read_pem("temporal_tls_ca_file", settings.temporal_tls_ca_file),
        client_cert=_read_pem("temporal_tls_cert_file", settings.temporal_tls_cert_file),
        client_private_key=_read_pem("temporal_tls_key_file", settings.temporal_tls_key_file),
        domain=settings.temporal_tls_server_name,
    )
    return {"tls": config, "api_key": settings.temporal_api_key}


def _read_pem(setting: str, path: Path | None) -> bytes | None:
    if path is None:
        return None
    variable = f"FULFILL_{setting.upper()}"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TemporalTLSError(f"{variable}={path}: cannot read it ({err.strerror or err})") from err
    # The SDK's own error for a file that is not PEM comes at connect time and does not say which file
    if b"-----BEGIN " not in data:
        raise TemporalTLSError(f"{variable}={path}: not a PEM file (expected a -----BEGIN ...----- block)")
    return data
