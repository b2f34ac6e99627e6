"""The HTTP API in front of the session's stack: the real app over an ASGI transport (same event loop as the
worker), and API keys of each scope."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from common.api import FulfillmentApi
from common.config import Settings
from common.http.app import create_app
from common.store import Store


@pytest.fixture(scope="session")
async def http(api: FulfillmentApi, stack_settings: Settings, worker: None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stack_settings.model_copy(update={"api_max_body_bytes": 64 * 1024}), api)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://engine.test", timeout=60) as client:
        yield client


async def new_key(store: Store, *scopes: str, name: str | None = None) -> dict[str, str]:
    """Headers with a new key of these scopes."""
    created = await store.api_keys.create(name or f"test-{'-'.join(scopes)}-{uuid.uuid4().hex[:6]}", scopes)
    return {"Authorization": f"Bearer {created.secret}"}


@pytest.fixture(scope="session")
async def intake(store: Store) -> dict[str, str]:
    return await new_key(store, "intake", name="storefront-test")


@pytest.fixture(scope="session")
async def ops(store: Store) -> dict[str, str]:
    return await new_key(store, "ops", name="ops-console-test")


@pytest.fixture(scope="session")
async def warehouse(store: Store) -> dict[str, str]:
    return await new_key(store, "warehouse", name="warehouse-test")


@pytest.fixture(scope="session")
async def reader(store: Store) -> dict[str, str]:
    return await new_key(store, "read", name="reader-test")
