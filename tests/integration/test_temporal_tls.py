"""The engine's Temporal client over TLS, mTLS and with an API key, through the real `connect()`.

The dev server speaks plaintext only, so a TLS-terminating proxy (Python `ssl`, requiring a client certificate
signed by its client CA) stands in front of it, as a TLS frontend or Temporal Cloud's does. The proxy also reads
the HTTP/2 headers the client sends (HPACK), so the test sees the API key arrive as gRPC metadata."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Self

import hpack
import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from common.config import Settings
from common.privacy import connect
from tests.certs import CertificateAuthority, Issued

SERVER_NAME = "temporal.test"  # not the address dialled (127.0.0.1): FULFILL_TEMPORAL_TLS_SERVER_NAME must be used
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADERS, _CONTINUATION = 0x1, 0x9
_END_HEADERS, _PADDED, _PRIORITY = 0x4, 0x8, 0x20


class _HeaderReader:
    """Decodes the header blocks of one HTTP/2 connection's client-to-server bytes, as they pass."""

    def __init__(self, sink: list[tuple[str, str]]) -> None:
        self._buffer = b""
        self._preface_seen = False
        self._decoder = hpack.Decoder()
        self._block = b""
        self._sink = sink

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if not self._preface_seen:
            if len(self._buffer) < len(_PREFACE):
                return
            self._buffer, self._preface_seen = self._buffer[len(_PREFACE) :], True
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                return
            kind, flags, payload = self._buffer[3], self._buffer[4], self._buffer[9 : 9 + length]
            self._buffer = self._buffer[9 + length :]
            if kind == _HEADERS:
                if flags & _PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if flags & _PRIORITY:
                    payload = payload[5:]
                self._block = payload
            elif kind == _CONTINUATION:
                self._block += payload
            else:
                continue
            if flags & _END_HEADERS:
                self._sink.extend((str(k), str(v)) for k, v in self._decoder.decode(self._block))
                self._block = b""


class TlsProxy:
    """TLS (with a required client certificate) on 127.0.0.1, plaintext to `upstream`. `headers` collects every
    request header clients sent; `refused` the handshakes it failed, with the reason."""

    def __init__(self, upstream: str, server: Issued, client_ca: Path) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
        self._context.load_cert_chain(server.cert_file, server.key_file)
        self._context.verify_mode = ssl.CERT_REQUIRED
        self._context.set_alpn_protocols(["h2"])  # gRPC clients insist on HTTP/2 by ALPN
        self.headers: list[tuple[str, str]] = []
        self.refused: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # The handshake here, not in start_server(ssl=...), so a refused one is seen rather than only logged
            await writer.start_tls(self._context)
        except (ssl.SSLError, OSError) as err:
            self.refused.append(str(err))
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, _HeaderReader(self.headers))),
            asyncio.create_task(self._pump(up_reader, writer, None)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: _HeaderReader | None
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
            while data := await reader.read(65536):
                if headers is not None:
                    headers.feed(data)
                writer.write(data)
                await writer.drain()


class Pki:
    def __init__(self, directory: Path) -> None:
        self.server_ca = CertificateAuthority(directory, "server")
        self.client_ca = CertificateAuthority(directory, "clients")
        self.stranger_ca = CertificateAuthority(directory, "stranger")
        self.server = self.server_ca.issue(SERVER_NAME)
        self.client = self.client_ca.issue("fulfill-worker", client=True)
        self.stranger_client = self.stranger_ca.issue("intruder", client=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def proxy(dev_server: WorkflowEnvironment, pki: Pki) -> AsyncIterator[TlsProxy]:
    upstream = dev_server.client.service_client.config.target_host
    async with TlsProxy(upstream, pki.server, pki.client_ca.cert_file) as p:
        yield p


def tls_settings(proxy: TlsProxy, pki: Pki, **update: object) -> Settings:
    fields: dict[str, object] = {
        "temporal_address": proxy.address,
        "temporal_tls_ca_file": pki.server_ca.cert_file,
        "temporal_tls_cert_file": pki.client.cert_file,
        "temporal_tls_key_file": pki.client.key_file,
        "temporal_tls_server_name": SERVER_NAME,
    }
    fields.update(update)
    return Settings.model_validate(fields)


async def test_mtls_client_connects_and_lists_workflows(proxy: TlsProxy, pki: Pki) -> None:
    client = await connect(tls_settings(proxy, pki))
    listed = [wf async for wf in client.list_workflows(limit=5)]
    assert isinstance(listed, list)  # the call went through the proxy and back
    assert proxy.refused == []
    assert any(name == ":path" and "ListWorkflowExecutions" in value for name, value in proxy.headers)
    # No API key configured: no authorization header goes out
    assert not any(name == "authorization" for name, _ in proxy.headers)


async def test_without_a_client_certificate_the_server_refuses(proxy: TlsProxy, pki: Pki) -> None:
    settings = tls_settings(proxy, pki, temporal_tls_cert_file=None, temporal_tls_key_file=None)
    with pytest.raises((RuntimeError, RPCError)):
        await connect(settings)
    assert any("did not return a certificate" in reason for reason in proxy.refused), proxy.refused
    assert proxy.headers == []  # nothing reached the server


async def test_a_client_certificate_from_another_ca_is_refused(proxy: TlsProxy, pki: Pki) -> None:
    settings = tls_settings(
        proxy,
        pki,
        temporal_tls_cert_file=pki.stranger_client.cert_file,
        temporal_tls_key_file=pki.stranger_client.key_file,
    )
    with pytest.raises((RuntimeError, RPCError)):
        await connect(settings)
    assert any("certificate" in reason.lower() for reason in proxy.refused), proxy.refused
    assert proxy.headers == []


async def test_a_server_the_configured_ca_did_not_sign_is_not_trusted(proxy: TlsProxy, pki: Pki) -> None:
    # The client trusts another CA: it must hang up on the (real, but unknown to it) server certificate
    settings = tls_settings(proxy, pki, temporal_tls_ca_file=pki.stranger_ca.cert_file)
    with pytest.raises(RuntimeError, match="UnknownIssuer"):
        await connect(settings)
    assert proxy.headers == []


async def test_a_server_certificate_for_another_name_is_not_trusted(proxy: TlsProxy, pki: Pki) -> None:
    settings = tls_settings(proxy, pki, temporal_tls_server_name="frontend.other.test")
    with pytest.raises(RuntimeError, match=r"NotValidForName.*frontend\.other\.test"):
        await connect(settings)
    assert proxy.headers == []


async def test_the_api_key_reaches_the_server_as_bearer_metadata(proxy: TlsProxy, pki: Pki) -> None:
    client = await connect(tls_settings(proxy, pki, temporal_api_key="tcld-test-key-123"))
    [wf async for wf in client.list_workflows(limit=1)]
    authorizations = {value for name, value in proxy.headers if name == "authorization"}
    assert authorizations == {"Bearer tcld-test-key-123"}
