"""`fulfill api-key`: a key is shown once, stored only as a hash, listed without its secret, revoked for good."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import httpx
from sqlalchemy import select

from common.db import tables as t
from common.store import Store
from tests.integration.conftest import Cli
from tests.orders import order_dict


async def test_create_list_use_and_revoke_a_key(cli: Cli, store: Store, http: httpx.AsyncClient) -> None:
    name = f"storefront-{uuid.uuid4().hex[:6]}"
    created = await asyncio.to_thread(cli, "api-key", "create", "--name", name, "--scope", "intake,read")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("fk_") and len(created.stdout.splitlines()) == 1  # the key alone on stdout
    assert "shown only now" in created.stderr

    rows = await store.db.read(select(t.api_keys).where(t.api_keys.c.name == name))
    assert rows[0].secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps([dict(r._mapping) for r in rows], default=str)

    listed = await asyncio.to_thread(cli, "api-key", "list", "--json")
    mine = [k for k in json.loads(listed.stdout) if k["name"] == name]
    assert mine and mine[0]["scopes"] == ["intake", "read"] and secret not in listed.stdout

    headers = {"Authorization": f"Bearer {secret}"}
    order_id = f"ORD-K{uuid.uuid4().hex[:8]}"
    assert (await http.post("/v1/orders", json=order_dict(order_id), headers=headers)).status_code == 202

    again = await asyncio.to_thread(cli, "api-key", "create", "--name", name, "--scope", "ops")
    assert again.returncode == 2 and "exists already" in again.stderr
    revoked = await asyncio.to_thread(cli, "api-key", "revoke", name)
    assert revoked.returncode == 0, revoked.stderr
    assert (await http.get(f"/v1/orders/{order_id}", headers=headers)).status_code == 401
    gone = json.loads((await asyncio.to_thread(cli, "api-key", "list", "--json")).stdout)
    assert name not in [k["name"] for k in gone]
    assert (await asyncio.to_thread(cli, "api-key", "revoke", name)).returncode == 2


async def test_bad_key_requests_are_refused_with_exit_2(cli: Cli) -> None:
    bad_scope = await asyncio.to_thread(cli, "api-key", "create", "--name", "x", "--scope", "admin")
    assert bad_scope.returncode == 2 and "unknown scope 'admin'" in bad_scope.stderr
    bad_name = await asyncio.to_thread(cli, "api-key", "create", "--name", "no/slashes", "--scope", "read")
    assert bad_name.returncode == 2 and "key name" in bad_name.stderr
