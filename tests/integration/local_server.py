"""A throw-away HTTP server on a free loopback port, for tests that stand in for the other side of a call: a
webhook receiver, a proxy's error page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(handler: Handler, *, method: str = "*", path: str = "/{tail:.*}") -> AsyncIterator[str]:
    """Serve `handler` for `method` requests to `path`; yields the base URL (http://127.0.0.1:PORT)."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
