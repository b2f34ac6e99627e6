"""Sandbox of Twilio's Messages API, so the real `twilio` SDK is exercised end to end.

Speaks `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` with Twilio's auth, response and error shapes
(the SDK turns the error JSON into `TwilioRestException` with the same code). Twilio's magic test numbers
behave as documented: +15005550001 is invalid (21211), +15005550009 cannot receive SMS (21614); opted-out
numbers get 21610. During an outage (outages.py) the API answers 503 with Twilio's error 20503, as Twilio does
when it is unavailable. Accepted messages go to the outbox, and status callbacks (sent, delivered), signed like
Twilio's, are posted to the StatusCallback URL when it points at this machine.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Iterable
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator
from yarl import URL

from sandbox.httputil import basic_auth
from sandbox.outages import Outages
from sandbox.store import OutboxMessage, SandboxStore

log = logging.getLogger("fulfill.sandbox.sms")

API = "/2010-04-01"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ALPHA_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
DEFAULT_OPTED_OUT = frozenset({"+15005550004"})
# Twilio's documented magic "To" numbers for test credentials
MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550009": (21614, "'To' number +15005550009 is not a valid mobile number"),
}
# Callbacks are only delivered on this machine: nothing leaves it, whatever URL a caller passes.
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STATUS_RANK = {
    "accepted": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
}


def twilio_error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


class TwilioSandbox:
    def __init__(
        self,
        store: SandboxStore,
        *,
        account_sid: str,
        auth_token: str,
        host: str,
        opted_out: Iterable[str] = DEFAULT_OPTED_OUT,
        callback_delays: tuple[float, float] = (0.1, 0.3),
        outages: Outages | None = None,
    ) -> None:
        self._store = store
        self._outages = outages if outages is not None else Outages()
        self._sid = account_sid
        self._token = auth_token
        self._validator = RequestValidator(auth_token)
        self._local_hosts = LOCAL_HOSTS | {host}
        self.opted_out = set(opted_out)
        self._callback_delays = callback_delays
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(API + "/Accounts/{account_sid}/Messages.json", self.create_message)
        app.router.add_get(API + "/Accounts/{account_sid}/Messages/{sid}.json", self.fetch_message)
        app.router.add_post("/sms/status", self.status_callback)
        app.on_cleanup.append(self._cleanup)

    async def _cleanup(self, app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _authorized(self, request: web.Request) -> web.Response | None:
        if self._outages.active("sms"):
            return twilio_error(503, 20503, "Service Unavailable")
        auth = basic_auth(request.headers.get("Authorization"))
        if auth != (self._sid, self._token):
            return twilio_error(401, 20003, "Authenticate")
        if request.match_info["account_sid"] != self._sid:
            return twilio_error(404, 20404, "The requested resource was not found")
        return None

    async def create_message(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        form = await request.post()
        to = str(form.get("To", "")).strip()
        sender = str(form.get("From", "")).strip()
        service = str(form.get("MessagingServiceSid", "")).strip()
        body = str(form.get("Body", ""))
        callback = str(form.get("StatusCallback", "")).strip() or None
        refused = self._refusal(to, sender, service, body)
        if refused is not None:
            return refused

        order_id = None
        if callback:
            order_ids = parse_qs(urlsplit(callback).query).get("order_id")
            order_id = order_ids[0] if order_ids else None
        sid = "SM" + secrets.token_hex(16)
        status = "queued" if sender else "accepted"
        saved = self._store.add_message(
            channel="sms",
            sender=sender or service,
            recipient=to,
            subject=None,
            body=body,
            html=False,
            order_id=order_id,
            provider_id=sid,
            status=status,
        )
        log.info("sms %s accepted (order %s)", sid, order_id)  # not the number: customer data stays out of logs
        if callback:
            self._spawn(self._deliver_callbacks(callback, saved))
        return web.json_response(self._resource(saved, service=service or None), status=201)

    def _refusal(self, to: str, sender: str, service: str, body: str) -> web.Response | None:
        """Twilio's 400 for a message it would not send, in the order Twilio checks, or None."""
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if sender and not (E164.match(sender) or ALPHA_SENDER.match(sender)):
            return twilio_error(400, 21212, f"The 'From' number {sender} is not a valid phone number.")
        if to in MAGIC_TO:
            code, message = MAGIC_TO[to]
            return twilio_error(400, code, message)
        if not E164.match(to):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in self.opted_out:
            return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
        return None

    async def fetch_message(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        saved = self._store.message_by_provider_id(request.match_info["sid"])
        if saved is None or saved.channel != "sms":
            return twilio_error(404, 20404, "The requested resource was not found")
        return web.json_response(self._resource(saved))

    async def status_callback(self, request: web.Request) -> web.Response:
        """Status callback sink. Unsigned posts are accepted (manual pokes); wrongly signed ones are not."""
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        signature = request.headers.get("X-Twilio-Signature")
        # Twilio signs the URL exactly as configured: keep the query's original percent-encoding
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        if signature is not None and not self._validator.validate(url, params, signature):
            return web.Response(status=403, text="invalid signature")
        sid = params.get("MessageSid")
        status = params.get("MessageStatus")
        if sid and status:
            current = self._store.message_by_provider_id(sid)
            # Callbacks can arrive out of order: a status only moves forward.
            if current is not None and STATUS_RANK.get(status, 0) >= STATUS_RANK.get(current.status or "", 0):
                self._store.set_message_status(sid, status)
        return web.Response(status=204)

    def _resource(self, saved: OutboxMessage, service: str | None = None) -> dict[str, Any]:
        date = format_datetime(saved.received_at)
        uri = f"{API}/Accounts/{self._sid}/Messages/{saved.provider_id}.json"
        sender = saved.sender if not saved.sender.startswith("MG") else None
        return {
            "sid": saved.provider_id,
            "account_sid": self._sid,
            "api_version": "2010-04-01",
            "to": saved.recipient,
            "from": sender,
            "messaging_service_sid": service,
            "body": saved.body,
            "status": saved.status,
            "direction": "outbound-api",
            "num_segments": str(1 + len(saved.body) // 160),
            "num_media": "0",
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "date_created": date,
            "date_updated": date,
            "date_sent": None,
            "uri": uri,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        }

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_callbacks(self, url: str, saved: OutboxMessage) -> None:
        if urlsplit(url).hostname not in self._local_hosts:
            log.info("status callback %s not delivered: the sandbox only calls this machine", url)
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        for delay, status in zip(self._callback_delays, ("sent", "delivered"), strict=True):
            await asyncio.sleep(delay)
            params = {
                "MessageSid": saved.provider_id or "",
                "SmsSid": saved.provider_id or "",
                "AccountSid": self._sid,
                "From": saved.sender,
                "To": saved.recipient,
                "MessageStatus": status,
                "SmsStatus": status,
                "ApiVersion": "2010-04-01",
            }
            headers = {"X-Twilio-Signature": self._validator.compute_signature(url, params)}
            try:
                # encoded=True: send the URL byte for byte as signed (yarl would otherwise requote the query)
                target = URL(url, encoded=True)
                async with self._session.post(target, data=params, headers=headers) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        log.info("status callback %s answered HTTP %d", url, resp.status)
            except (aiohttp.ClientError, TimeoutError) as err:
                log.info("status callback %s failed: %s", url, err)
                return
