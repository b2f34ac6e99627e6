"""Reading the sandbox outbox over HTTP (what `fulfill outbox` calls)."""

from __future__ import annotations

import aiohttp

from common.sandbox.store import OutboxMessage


async def fetch_outbox(base_url: str, order_id: str | None = None, *, timeout_s: float = 10.0) -> list[OutboxMessage]:
    """Messages the sandbox at `base_url` (e.g. http://127.0.0.1:8026) received, oldest first."""
    params = {"order_id": order_id} if order_id is not None else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.get(base_url.rstrip("/") + "/outbox", params=params) as resp,
    ):
        resp.raise_for_status()
        data = await resp.json()
    return [OutboxMessage.model_validate(m) for m in data["messages"]]
