"""Sandbox of Twilio's Messages API, so the real `twilio` SDK is exercised end to end.

Speaks `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (and its list, `GET`, by To and From, newest
first, and `GET .../Messages/{Sid}.json`) with Twilio's auth, response and error shapes
(the SDK turns the error JSON into `TwilioRestException` with the same code). Twilio's magic test numbers
behave as documented: +15005550001 is invalid (21211), +15005550009 cannot receive SMS (21614); opted-out
numbers get 21610 (+15005550004 always, and every number that texted STOP until it texts START). During an
outage (outages.py) the API answers 503 with Twilio's error 20503, as Twilio does when it is unavailable.

Delivery: an accepted message goes to the outbox and moves on there by itself, queued -> sent -> delivered
(`callback_delays` apart), as `fulfill outbox` shows. Each status is posted as a status callback, signed like
Twilio's (X-Twilio-Signature over the URL and the form, with the account's auth token), to the message's
StatusCallback URL when that points at this machine (nothing leaves it). A few numbers stand for handsets the
network cannot reach and end with Twilio's error codes (https://www.twilio.com/docs/api/errors) in ErrorCode:

    +15555530003   queued -> sent -> undelivered, 30003 Unreachable destination handset
    +15555530005   queued -> sent -> undelivered, 30005 Unknown destination handset
    +15555530006   queued -> sent -> undelivered, 30006 Landline or unreachable carrier
    +15555530008   queued -> failed,              30008 Unknown error

A customer texting back: `POST /sms/_sandbox/inbound {"from": "+15555550100", "body": "STOP"}` (optional "to":
the number texted, by default the sender number of the settings) is an inbound message. Like Twilio's default
opt-out handling, STOP, STOPALL, UNSUBSCRIBE, CANCEL, END or QUIT (the whole message, any case) put the number on
the sandbox's blocklist (later messages to it get 21610) and START, YES or UNSTOP take it off, each answered with
Twilio's standard confirmation; HELP and INFO get no reply of the sandbox's own (as with Advanced Opt-Out's HELP
reply turned off: the application answers). The message is posted, signed, to the inbound webhook
(`sandbox_sms_inbound_url`: the engine's), and the answer says what the customer got back: Twilio's confirmation
and the messages of the webhook's TwiML reply (none to a number that just opted out: Twilio would refuse them),
each also kept in the outbox. `/sms/status` stays a sink for status callbacks pointed at the sandbox itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator
from yarl import URL

from sandbox.httputil import basic_auth
from sandbox.outages import Outages, problem
from sandbox.store import OutboxMessage, SandboxStore
from sandbox.webhook_delivery import LOCAL_HOSTS

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
STATUS_RANK = {
    "accepted": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
}


@dataclass(frozen=True)
class Undeliverable:
    status: str  # undelivered | failed
    code: int
    message: str


# Handsets the sandbox network cannot reach (see the module's docstring)
UNDELIVERABLE = {
    "+15555530003": Undeliverable("undelivered", 30003, "Unreachable destination handset"),
    "+15555530005": Undeliverable("undelivered", 30005, "Unknown destination handset"),
    "+15555530006": Undeliverable("undelivered", 30006, "Landline or unreachable carrier"),
    "+15555530008": Undeliverable("failed", 30008, "Unknown error"),
}
# Twilio's default opt-out handling: the keywords and its standard replies
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
STOP_REPLY = (
    "You have successfully been unsubscribed. You will not receive any more messages from this number. "
    "Reply START to resubscribe."
)
START_REPLY = (
    "You have successfully been re-subscribed to messages from this number. Reply HELP for help. "
    "Reply STOP to unsubscribe. Msg&Data Rates May Apply."
)
INBOUND_EXAMPLE = '{"from": "+15555550100", "body": "STOP"}'


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
        number: str = "+15555550000",
        inbound_url: str | None = None,
    ) -> None:
        self._store = store
        self._outages = outages if outages is not None else Outages()
        self._sid = account_sid
        self._token = auth_token
        self._validator = RequestValidator(auth_token)
        # Callbacks are only delivered on this machine: nothing leaves it, whatever URL a caller passes.
        self._local_hosts = LOCAL_HOSTS | {host}
        self.opted_out = set(opted_out)
        self._callback_delays = callback_delays
        self._number = number  # the number customers text (the engine's sender), unless they name another
        self.inbound_url = inbound_url  # where inbound messages are posted (the engine's webhook); None: nowhere
        self.attempts: Counter[str] = Counter()  # messages asked for, per "To" number (refused ones too)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(API + "/Accounts/{account_sid}/Messages.json", self.create_message)
        app.router.add_get(API + "/Accounts/{account_sid}/Messages.json", self.list_messages)
        app.router.add_get(API + "/Accounts/{account_sid}/Messages/{sid}.json", self.fetch_message)
        app.router.add_post("/sms/status", self.status_callback)
        app.router.add_post("/sms/_sandbox/inbound", self.inbound)
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
        self.attempts[to] += 1
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
        self._spawn(self._deliver(saved, callback))
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
        if to in self.opted_out or self._store.is_opted_out(to):
            return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
        return None

    async def fetch_message(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        saved = self._store.message_by_provider_id(request.match_info["sid"])
        if saved is None or saved.channel != "sms":
            return twilio_error(404, 20404, "The requested resource was not found")
        return web.json_response(self._resource(saved))

    async def list_messages(self, request: web.Request) -> web.Response:
        """Twilio's message list, newest first, filtered by To and From, paged by PageSize (at most 1000) and
        Page, in Twilio's 2010 list envelope (the SDK follows `next_page_uri`)."""
        if (denied := self._authorized(request)) is not None:
            return denied
        query = request.query
        to, sender = query.get("To"), query.get("From")
        try:
            size = min(int(query.get("PageSize", "50")), 1000)
            page = int(query.get("Page", "0"))
        except ValueError:
            return twilio_error(400, 20001, "Invalid PageSize or Page")
        if size < 1 or page < 0:
            return twilio_error(400, 20001, "Invalid PageSize or Page")
        if to:
            found = self._store.sms_to(to, sender or None)
        else:
            found = [m for m in reversed(self._store.messages()) if m.channel == "sms"]
            found = [m for m in found if sender is None or m.sender == sender]
        records = found[page * size : (page + 1) * size]
        base = URL(f"{API}/Accounts/{self._sid}/Messages.json").with_query(
            {k: v for k, v in {"To": to, "From": sender}.items() if v} | {"PageSize": str(size)}
        )
        more = (page + 1) * size < len(found)
        return web.json_response(
            {
                "messages": [self._resource(m) for m in records],
                "page": page,
                "page_size": size,
                "start": page * size,
                "end": page * size + max(len(records) - 1, 0),
                "uri": str(base.update_query(Page=str(page))),
                "first_page_uri": str(base.update_query(Page="0")),
                "previous_page_uri": str(base.update_query(Page=str(page - 1))) if page else None,
                "next_page_uri": str(base.update_query(Page=str(page + 1))) if more else None,
            }
        )

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
        failure = UNDELIVERABLE.get(saved.recipient) if saved.status in ("undelivered", "failed") else None
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
            "error_code": failure.code if failure else None,
            "error_message": failure.message if failure else None,
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

    async def _deliver(self, saved: OutboxMessage, callback: str | None) -> None:
        """The message's way through the network: each status kept in the outbox (forward only) and posted to
        its status callback, if any."""
        sid = saved.provider_id or ""
        failure = UNDELIVERABLE.get(saved.recipient)
        to_sent, to_final = self._callback_delays
        steps: list[tuple[float, str, Undeliverable | None]]
        if failure is None:
            steps = [(to_sent, "sent", None), (to_final, "delivered", None)]
        elif failure.status == "failed":
            steps = [(to_sent + to_final, "failed", failure)]
        else:
            steps = [(to_sent, "sent", None), (to_final, "undelivered", failure)]
        if callback and urlsplit(callback).hostname not in self._local_hosts:
            log.info("status callback %s not delivered: the sandbox only calls this machine", callback)
            callback = None
        if callback:
            await self._post_status(callback, saved, saved.status or "queued", None)
        for delay, status, error in steps:
            await asyncio.sleep(delay)
            current = self._store.message_by_provider_id(sid)
            if current is not None and STATUS_RANK[status] > STATUS_RANK.get(current.status or "", 0):
                self._store.set_message_status(sid, status)
            if callback and not await self._post_status(callback, saved, status, error):
                callback = None  # the engine is not there: the outbox goes on, the callbacks stop

    async def _post_status(self, url: str, saved: OutboxMessage, status: str, error: Undeliverable | None) -> bool:
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
        if error is not None:
            params["ErrorCode"] = str(error.code)
        answer = await self._post_signed(url, params)
        if answer is None:
            return False
        if answer[0] >= 300:
            log.info("status callback %s answered HTTP %d", url, answer[0])
        return True

    async def _post_signed(self, url: str, params: dict[str, str]) -> tuple[int, str, str] | None:
        """POST the form to `url` signed as Twilio signs its webhooks: (status, content type, body), or None if
        nothing answered."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        headers = {"X-Twilio-Signature": self._validator.compute_signature(url, params)}
        try:
            # encoded=True: send the URL byte for byte as signed (yarl would otherwise requote the query)
            target = URL(url, encoded=True)
            async with self._session.post(target, data=params, headers=headers) as resp:
                return resp.status, resp.content_type, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as err:
            log.info("webhook %s failed: %s", url, err)
            return None

    # -- a customer texting back ---------------------------------------------------------------------------

    async def inbound(self, request: web.Request) -> web.Response:
        """A customer's text to our number (see the module's docstring); answers what the customer got back."""
        parsed = await _inbound_message(request, self._number)
        if isinstance(parsed, web.Response):
            return parsed
        sender, body, to = parsed
        sid = "SM" + secrets.token_hex(16)
        replies = self._opt_out_or_in(sender, body.strip().upper())
        opted_out = sender in self.opted_out or self._store.is_opted_out(sender)
        log.info("inbound sms %s (%s)", sid, "opted out" if opted_out else "subscribed")
        engine = await self._post_inbound(sid, sender, to, body)
        if engine is not None and not opted_out:  # Twilio refuses a reply to a number that opted out (21610)
            replies.extend(engine["messages"])
        for reply in replies:
            self._store.add_message(
                channel="sms",
                sender=to,
                recipient=sender,
                subject=None,
                body=reply,
                html=False,
                order_id=None,
                provider_id="SM" + secrets.token_hex(16),
                status="delivered",
            )
        return web.json_response(
            {"sid": sid, "from": sender, "to": to, "opted_out": opted_out, "replies": replies, "engine": engine}
        )

    def _opt_out_or_in(self, sender: str, word: str) -> list[str]:
        """Twilio's default opt-out handling of a keyword: the blocklist changed, and its confirmation."""
        if word in STOP_WORDS:
            self._store.set_opted_out(sender, True, word)
            return [STOP_REPLY]
        if word in START_WORDS:
            self._store.set_opted_out(sender, False, word)
            self.opted_out.discard(sender)
            return [START_REPLY]
        return []

    async def _post_inbound(self, sid: str, sender: str, to: str, body: str) -> dict[str, Any] | None:
        """The message posted to the inbound webhook: its answer (status, TwiML, the texts of its <Message>s),
        None if there is no webhook to call."""
        url = self.inbound_url
        if url and urlsplit(url).hostname not in self._local_hosts:
            log.info("inbound webhook %s not called: the sandbox only calls this machine", url)
            url = None
        if not url:
            return None
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": self._sid,
            "From": sender,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01",
        }
        answer = await self._post_signed(url, params)
        if answer is None:
            return {"url": url, "status": None, "content_type": None, "twiml": None, "messages": []}
        status, content_type, text = answer
        messages = _twiml_messages(text) if status < 300 and "xml" in content_type else []
        return {"url": url, "status": status, "content_type": content_type, "twiml": text, "messages": messages}


async def _inbound_message(request: web.Request, number: str) -> tuple[str, str, str] | web.Response:
    """(from, body, to) of a `POST /sms/_sandbox/inbound`, or the 400 that refuses it."""
    try:
        data = json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return _bad_request(f"the body must be JSON like {INBOUND_EXAMPLE}: {err}")
    if not isinstance(data, dict):
        return _bad_request(f"the body must be a JSON object like {INBOUND_EXAMPLE}")
    unknown = sorted(set(data) - {"from", "body", "to"})
    if unknown:
        return _bad_request(f"unknown field(s) {', '.join(unknown)}: only from, body and to")
    sender, body, to = data.get("from"), data.get("body"), data.get("to", number)
    if not isinstance(sender, str) or not E164.match(sender):
        return _bad_request("from: the customer's number in E.164 form, e.g. +15555550100")
    if not isinstance(to, str) or not E164.match(to):
        return _bad_request("to: the number texted, in E.164 form")
    if not isinstance(body, str) or not body.strip() or len(body) > 1600:
        return _bad_request("body: the text, 1 to 1600 characters")
    return sender, body, to


def _twiml_messages(twiml: str) -> list[str]:
    """The texts of a TwiML reply's <Message> verbs (their text, or their <Body>)."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError:
        return []
    texts = []
    for message in root.iter("Message"):
        body = message.find("Body")
        text = (body.text if body is not None else message.text) or ""
        if text.strip():
            texts.append(text.strip())
    return texts


def _bad_request(detail: str) -> web.Response:
    return problem(400, "Invalid inbound message", detail)
