"""A cap on request bodies (`FULFILL_API_MAX_BODY_BYTES`), checked on Content-Length and on the bytes read,
so a client cannot make the process buffer more than that. The app's problem handler answers the 413."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, f"the request body is larger than {max_bytes} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        # A declared length over the cap is refused at the first read, before a byte of the body is taken
        over = declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes)
        seen = self.max_bytes + 1 if over else 0

        async def counting_receive() -> Message:
            nonlocal seen
            if seen > self.max_bytes:
                raise _too_large(self.max_bytes)  # answered 413 by the app's problem handler
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)
