"""What Twilio tells the engine, acted on: status callbacks (the delivery log, forward only; an undelivered
customer SMS falls back to email once) and customers' texts (STOP, START, HELP). The HTTP layer
(common/http/sms_webhooks.py) checks the signature and hands the form here.

Each callback is acted on once: (MessageSid, MessageStatus) and an inbound MessageSid are recorded in
webhook_events first (a repeat is acknowledged and changes nothing); if acting on it fails, the record is
forgotten again so Twilio's retry is acted on. The fallback is durable: the delivery log marks it pending in the
statement that records the failure, the API starts its workflow at once, and the worker's relay
(`start_pending_fallbacks`) starts whatever is still pending (Temporal was unreachable, the API died).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from common.config import Settings
from common.errors import InvalidRequest
from common.logs import describe_error
from common.notifications.contracts import (
    DELIVERY_RANK,
    FALLBACK_PENDING,
    FALLBACK_STARTED,
    NotificationRecord,
    SmsFallbackRequest,
)
from common.notifications.delivery import describe_twilio_error, fallback_workflow_id, mask_recipient, twiml
from common.notifications.opt_outs import Keyword, keyword_of
from common.store import Store
from workflows.sms_fallback import SmsFallbackWorkflow

log = logging.getLogger("fulfill.sms")

SOURCE = "twilio"
# Twilio's statuses that a status callback may report (not ours: bounced, opted-out)
CALLBACK_STATUSES = frozenset(DELIVERY_RANK) - {"bounced", "opted-out"}


@dataclass(frozen=True)
class StatusCallbackResult:
    # recorded: the log moved forward; unchanged: behind what it says already (out of order); duplicate: this
    # (MessageSid, MessageStatus) came before; unknown-message: no message of ours; ignored: a status we do not keep
    outcome: Literal["recorded", "unchanged", "duplicate", "unknown-message", "ignored"]
    key: str | None = None
    status: str | None = None
    fallback: str | None = None  # the SMS's email fallback, as it stands after this callback


@dataclass(frozen=True)
class InboundSmsResult:
    keyword: Keyword | None  # what the text asks (None: no keyword: a customer's reply nobody reads here)
    opted_out: bool | None  # the number's state after it, when the text changed it
    twiml: str  # the answer (text/xml)
    duplicate: bool = False


def _one(params: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = (params.get(name) or "").strip()
        if value:
            return value
    return ""


async def record_sms_status(
    client: Client, store: Store, settings: Settings, params: Mapping[str, str], *, key: str | None = None
) -> StatusCallbackResult:
    """A Twilio status callback (its form, `params`; `key`: the delivery-log key the callback URL names, for a
    callback that comes before the sender recorded the message's sid). InvalidRequest without a MessageSid or
    MessageStatus."""
    sid = _one(params, "MessageSid", "SmsSid")
    status = _one(params, "MessageStatus", "SmsStatus").lower()
    if not sid or not status:
        raise InvalidRequest("a status callback needs MessageSid and MessageStatus")
    if status not in CALLBACK_STATUSES:
        return StatusCallbackResult("ignored", status=status)
    event_id = f"{sid}:{status}"
    if not await store.webhook_events.first_time(SOURCE, event_id, kind="sms-status", subject=sid):
        return StatusCallbackResult("duplicate", status=status)
    error = describe_twilio_error(params.get("ErrorCode"), params.get("ErrorMessage"))
    try:
        update = await store.notifications.record_delivery(sid, status, error, key=key)
    except BaseException:
        await _forget(store, event_id)
        raise
    record = update.record
    if record is None:
        log.info("status callback for %s (%s): no message of ours", sid, status)
        return StatusCallbackResult("unknown-message", status=status)
    if update.fallback_pending:
        record = await _start_now(client, store, settings, record)
    outcome: Literal["recorded", "unchanged"] = "recorded" if update.changed else "unchanged"
    return StatusCallbackResult(outcome, record.key, record.delivery_status, record.fallback_status)


async def _start_now(
    client: Client, store: Store, settings: Settings, record: NotificationRecord
) -> NotificationRecord:
    """Start the fallback now; if Temporal cannot take it, it stays pending for the worker's relay."""
    try:
        await start_sms_fallback(client, store, settings, record)
    except Exception as err:
        log.warning("email fallback of %s left for the relay: %s", record.key, describe_error(err))
        return record
    return await store.notifications.get(record.key) or record


async def start_sms_fallback(client: Client, store: Store, settings: Settings, record: NotificationRecord) -> bool:
    """Start the email fallback workflow of an undelivered SMS (once: its id is never reused) and mark it started;
    False if it was started before."""
    try:
        await client.start_workflow(
            SmsFallbackWorkflow.run,
            SmsFallbackRequest(sms_key=record.key, order_id=record.order_id),
            id=fallback_workflow_id(record.key),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"Email fallback of SMS {record.key} ({record.delivery_status})",
        )
        started = True
    except WorkflowAlreadyStartedError:
        started = False
    await store.notifications.set_fallback_status(record.key, FALLBACK_STARTED, only_from=FALLBACK_PENDING)
    return started


async def start_pending_fallbacks(client: Client, store: Store, settings: Settings, *, limit: int = 100) -> list[str]:
    """Start the email fallbacks still pending; the keys of those started. One that fails waits for the next
    call (the others go on)."""
    started = []
    for record in await store.notifications.pending_fallbacks(limit):
        try:
            await start_sms_fallback(client, store, settings, record)
            started.append(record.key)
        except Exception as err:
            log.warning("email fallback of %s still pending: %s", record.key, describe_error(err))
    return started


async def receive_sms(store: Store, settings: Settings, params: Mapping[str, str]) -> InboundSmsResult:
    """A customer's text (Twilio's inbound message webhook). STOP and its synonyms opt the number out, START, YES
    and UNSTOP in again: answered with an empty <Response/> (Twilio's opt-out handling sends its own
    confirmation, and a reply to a number that just opted out would be refused with 21610); HELP and INFO are
    answered with `settings.sms_help_reply`. Anything else is acknowledged without an answer."""
    sid = _one(params, "MessageSid", "SmsMessageSid", "SmsSid")
    phone = _one(params, "From")
    if not sid or not phone:
        raise InvalidRequest("an inbound message needs MessageSid and From")
    keyword, word = keyword_of(params.get("Body") or "", params.get("OptOutType"))
    answer = twiml(settings.sms_help_reply) if keyword == "help" and settings.sms_help_reply else twiml()
    event_id = f"{sid}:inbound"
    if not await store.webhook_events.first_time(SOURCE, event_id, kind="sms-inbound", subject=sid):
        return InboundSmsResult(keyword, None, answer, duplicate=True)
    opted_out: bool | None = None
    if keyword in ("stop", "start"):
        opted_out = keyword == "stop"
        try:
            await store.sms_opt_outs.record(phone, opted_out=opted_out, keyword=word)
        except BaseException:
            await _forget(store, event_id)
            raise
        log.info("%s texted %s: SMS %s", mask_recipient(phone), word, "off" if opted_out else "on again")
    return InboundSmsResult(keyword, opted_out, answer)


async def _forget(store: Store, event_id: str) -> None:
    try:
        await store.webhook_events.forget(SOURCE, event_id)
    except Exception as err:  # the database went away: the repeat will be taken for a duplicate
        log.warning("could not forget webhook event %s: %s", event_id, describe_error(err))
