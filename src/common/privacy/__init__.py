"""Customer data protection: the one data converter every process uses with Temporal (payloads encrypted by
common.crypto, failures' messages too), customers' data keys (data_keys) and the right to erasure (erasure).

`data_converter(settings)` is the only converter to hand a Temporal client, worker, test environment or
replayer; `connect(settings)` is a client with it.
"""

from __future__ import annotations

import asyncio
import weakref

from temporalio.client import Client
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.runtime import Runtime

from common.config import Settings
from common.crypto.codec import DataKey, EncryptionCodec
from common.crypto.keys import KeyRing
from common.db.database import Database
from common.privacy.data_keys import CustomerKeyStore
from common.temporal import PayloadConverter
from common.temporal import connect as connect_with
from common.tracing import client_interceptors


def keystore_url(settings: Settings) -> str:
    return settings.codec_keystore_url or settings.database_url


class LazyKeyStore:
    """The customer key store of `settings`, opened at its first use in each event loop (a converter is made
    before any loop runs, and a CLI command runs a loop of its own)."""

    def __init__(self, settings: Settings, ring: KeyRing, *, cache: bool = True) -> None:
        self._url = keystore_url(settings)
        self._key_ttl = settings.codec_key_cache_ttl
        self._ring = ring
        self._cache = cache
        self._stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CustomerKeyStore] = (
            weakref.WeakKeyDictionary()
        )
        self._opening: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    async def store(self) -> CustomerKeyStore:
        loop = asyncio.get_running_loop()
        if (store := self._stores.get(loop)) is not None:
            return store
        async with self._opening.setdefault(loop, asyncio.Lock()):
            if (store := self._stores.get(loop)) is None:
                db = await Database.open(self._url, migrate=True)
                store = self._stores[loop] = CustomerKeyStore(db, self._ring, cache=self._cache, key_ttl=self._key_ttl)
        return store

    async def customer_of(self, workflow_id: str) -> str | None:
        return await (await self.store()).customer_of(workflow_id)

    async def register(self, workflow_id: str, customer_id: str) -> None:
        await (await self.store()).register(workflow_id, customer_id)

    async def active_key(self, customer_id: str, *, fresh: bool = False) -> DataKey:
        return await (await self.store()).active_key(customer_id, fresh=fresh)

    async def key(self, key_id: str) -> DataKey:
        return await (await self.store()).key(key_id)


def payload_codec(settings: Settings, *, cache: bool = True, erased_placeholder: bool = False) -> EncryptionCodec:
    ring = KeyRing.load(settings)
    return EncryptionCodec(ring, LazyKeyStore(settings, ring, cache=cache), erased_placeholder=erased_placeholder)


def data_converter(settings: Settings) -> DataConverter:
    return DataConverter(
        payload_converter_class=PayloadConverter,
        payload_codec=payload_codec(settings),
        # Failure messages and stack traces go into an encoded payload too: a provider's error may quote a
        # customer's address
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def customer_keys(client: Client) -> CustomerKeyStore:
    """The customer key store behind `client`'s codec (one made by `connect` or `data_converter`)."""
    codec = client.data_converter.payload_codec
    if not isinstance(codec, EncryptionCodec) or not isinstance(codec.data_keys, LazyKeyStore):
        raise TypeError("the client was not made with common.privacy.data_converter")
    return await codec.data_keys.store()


async def connect(settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None) -> Client:
    """A client of the engine's namespace with the one data converter (see common.temporal.connect), the tracing
    interceptor once the process turned tracing on (common.tracing.configure), and `runtime` (a worker's, with
    its metrics endpoint)."""
    return await connect_with(
        settings,
        data_converter=data_converter(settings),
        lazy=lazy,
        interceptors=client_interceptors(),
        runtime=runtime,
    )
