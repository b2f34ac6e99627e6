"""SMS through the real `twilio` SDK; `settings.twilio_base_url` points it at the sandbox.

The SDK's async API (`messages.create_async` over its aiohttp `AsyncTwilioHttpClient`): no thread per
message, and one HTTP session (keep-alive connections) per SmsSender, opened in the running loop on the
first message. Close it with `await sender.close()`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from common.config import Settings
from common.integrations import NotificationError
from common.logs import redact

# Retrying cannot help: invalid number, opted out (STOP), not SMS-capable, unverified on a trial account
PERMANENT_CODES = frozenset({21211, 21610, 21614, 21608})
# accepted_since: how many of a number's latest messages to look through, and how far Twilio's clock may be
# behind ours
LOOKUP_LIMIT = 20
CLOCK_SKEW = timedelta(minutes=5)


class SmsPermanentError(NotificationError):
    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"Twilio error {code}: {message}" if code is not None else message)
        self.code = code
        self.message = message


class SmsTransientError(NotificationError):
    retryable = True

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class _HttpClient(AsyncTwilioHttpClient):
    """The SDK's aiohttp client with two fixes: its session is created in the loop that uses it (not where
    the sender is constructed), without env proxies (like the sandbox's local endpoint needs); and every
    request gets the sender's timeout (the SDK passes none, which aiohttp reads as "wait forever")."""

    def __init__(self, timeout: float) -> None:
        super().__init__(pool_connections=False, timeout=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the SDK calls it with this signature)
        allow_redirects: bool = False,
    ) -> Response:
        if self._session is None or self._session.closed:
            self._session = self.session = aiohttp.ClientSession(trust_env=False)
        return await super().request(
            method, url, params, data, headers, auth, timeout if timeout is not None else self.timeout, allow_redirects
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SmsSender:
    def __init__(self, settings: Settings, *, timeout: float = 15.0) -> None:
        self._settings = settings
        http_client = _HttpClient(timeout)
        self._http_client = http_client
        self._client = Client(settings.twilio_account_sid, settings.twilio_auth_token, http_client=http_client)
        if settings.twilio_base_url:
            # The Messages resource lives on the `api` domain; its base_url is what every request URL is built
            # from. Edge/region (env TWILIO_EDGE/TWILIO_REGION) would rewrite the host, so they are cleared.
            self._client.api.base_url = settings.twilio_base_url.rstrip("/")
            self._client.edge = None
            self._client.region = None

    def status_callback_url(self, order_id: str, **extra: str) -> str | None:
        """settings.sms_status_callback_url with `order_id` (and `extra`) in the query, or None if unset."""
        base = self._settings.sms_status_callback_url
        if not base:
            return None
        parts = urlsplit(base)
        query = "&".join(q for q in (parts.query, urlencode({"order_id": order_id, **extra})) if q)
        return urlunsplit(parts._replace(query=query))

    async def send(self, *, to: str, body: str, status_callback: str | None) -> str:
        """Sends one SMS; returns the Twilio message sid."""
        sender = self._settings.twilio_from_number
        kwargs: dict[str, Any] = {"to": to, "body": body}
        if sender.startswith("MG"):
            kwargs["messaging_service_sid"] = sender
        else:
            kwargs["from_"] = sender
        if status_callback:
            kwargs["status_callback"] = status_callback
        # Twilio's messages quote the number ("The 'To' number +1555... is not a valid phone number"): ours mask
        # it, and are not chained to the SDK's errors, whose text (logged and recorded as the cause) keeps it
        try:
            message = await self._client.messages.create_async(**kwargs)
        except TwilioRestException as err:
            code = err.code if isinstance(err.code, int) else None
            if err.status == 429 or err.status >= 500:
                raise SmsTransientError(f"Twilio HTTP {err.status}: {redact(err.msg, to)}", code) from None
            # Other 4xx: invalid/opted-out recipients (21211, 21610, 21614, 21608), auth and request errors
            raise SmsPermanentError(code, redact(err.msg, to)) from None
        except TwilioServiceException as err:  # the newer RFC 9457 error shape
            if err.status == 429 or err.status >= 500:
                raise SmsTransientError(f"Twilio HTTP {err.status}: {redact(err.title, to)}", err.code) from None
            raise SmsPermanentError(err.code, redact(err.detail or err.title, to)) from None
        except (TwilioException, aiohttp.ClientError, OSError, TimeoutError) as err:
            raise SmsTransientError(f"Twilio unreachable: {redact(str(err), to)}") from None
        if message.sid is None:
            raise SmsTransientError("Twilio answered without a message sid")
        return message.sid

    async def accepted_since(self, *, to: str, body: str, since: datetime) -> list[str]:
        """The sids of the messages to `to` with this body that Twilio accepted since `since`, newest first:
        what an attempt that died before hearing Twilio's answer may have sent. Twilio's own list of the
        account's messages (by To, and From unless a Messaging Service sends), the latest LOOKUP_LIMIT; a
        trial account's prefix on the body is allowed for."""
        kwargs: dict[str, Any] = {"to": to, "limit": LOOKUP_LIMIT, "page_size": LOOKUP_LIMIT}
        sender = self._settings.twilio_from_number
        if not sender.startswith("MG"):
            kwargs["from_"] = sender
        earliest = since - CLOCK_SKEW
        try:
            messages = await self._client.messages.list_async(**kwargs)
        except TwilioRestException as err:
            raise SmsTransientError(f"Twilio HTTP {err.status}: {redact(err.msg, to)}") from None
        except (TwilioException, aiohttp.ClientError, OSError, TimeoutError) as err:
            raise SmsTransientError(f"Twilio unreachable: {redact(str(err), to)}") from None
        return [
            m.sid
            for m in messages
            if m.sid is not None
            and m.body is not None
            and m.body.endswith(body)
            and (m.date_created is None or m.date_created >= earliest)
        ]

    async def close(self) -> None:
        await self._http_client.close()
