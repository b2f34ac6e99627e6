"""Small HTTP helpers shared by the sandbox servers."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web


def basic_auth(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header, or None if absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("latin1")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def api_key(header: str | None) -> str | None:
    """The API key of `Authorization: Bearer <key>` or of HTTP Basic (key as user), as EasyPost accepts both."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer":
        return token.strip() or None
    auth = basic_auth(header)
    return auth[0] if auth is not None else None


def easypost_error(status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> web.Response:
    """EasyPost's error body, which its SDK parses into an ApiError with this code and these field errors."""
    return web.json_response({"error": {"code": code, "message": message, "errors": errors or []}}, status=status)
