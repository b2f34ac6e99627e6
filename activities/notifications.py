"""Customer notifications by email and SMS, exactly once per (order, event, channel).

The delivery log in the database is claimed before sending (all channels of a notification in one transaction),
the channels are sent at once, and the messages that went out are marked sent in one more transaction (also when
the attempt is cancelled half-way): a retried activity or a restarted worker skips what was already sent. The
window left is a crash after a provider accepted a message and before it was marked. The retry asks Twilio (its
list of the number's messages) whether it accepted the SMS, and marks it with Twilio's sid instead of sending it
again; SMTP cannot be asked, so such an email is sent again (at-least-once beats a missing shipping notice), with
the same Message-ID. Marking the channels together makes that window a little longer than marking each as soon as
it is sent: a message that went out waits for the other channels, up to MARK_GRACE (a quarter second), before it
is marked without them. Usually all channels answer within milliseconds of each other, so a notification costs one
write transaction after the claim instead of one per channel, and a crash in that window stays rare; a slow or
hung channel never holds back the others' mark longer than MARK_GRACE. Emails carry a deterministic Message-ID so
relays and mail clients can drop that rare copy.

A number that opted out (texted STOP: common.notifications.opt_outs) gets no SMS: the message is logged as not
sent ("opted-out") and the notice's email goes on. Twilio refusing a number as unsubscribed (21610) records the
opt-out too. An email the relay refuses for good (SMTP 5xx) is logged "bounced". An SMS the network did not
deliver (Twilio's status callback, common/api/sms.py) is sent again by email, once (`send_sms_fallback`, run by
workflows/sms_fallback.py).
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from datetime import datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from common import metrics
from common.config import Settings
from common.integrations.email import EmailPermanentError, EmailSender
from common.integrations.sms import SmsPermanentError, SmsSender, SmsTransientError
from common.logs import customer_data, redact
from common.messages import MessageRenderer, RenderedMessage
from common.models import Channel, NotifyRequest, NotifyResult, OpsAlert
from common.notifications.contracts import (
    FALLBACK_DONE,
    FALLBACK_NO_EMAIL,
    FALLBACK_NOT_NEEDED,
    FALLBACK_REFUSED,
    FALLBACK_SENT,
    NotificationClaim,
    SmsFallbackRequest,
    SmsFallbackResult,
)
from common.notifications.delivery import fallback_key, sibling_email_key
from common.notifications.opt_outs import UNSUBSCRIBED_CODE
from common.store import Store

# How long the channels of a notification that went out wait for the others before they are marked sent anyway:
# together they cost one transaction; a slow channel holds back the others' mark (the window in which a crash
# sends a message again) for this long at most.
MARK_GRACE = 0.25

OPTED_OUT = "opted-out"
NOT_SENT_OPTED_OUT = "not sent: the number opted out of SMS (texted STOP); the other channels go on"


def notification_key(order_id: str, event: str, channel: str, occurrence: str | None = None) -> str:
    return f"notify:{order_id}:{event}:{channel}" + (f":{occurrence}" if occurrence else "")


class NotificationActivities:
    def __init__(self, store: Store, email: EmailSender, sms: SmsSender, settings: Settings) -> None:
        self._store = store
        self._email = email
        self._sms = sms
        self._settings = settings
        self._renderer = MessageRenderer.from_settings(settings)  # a broken template override fails here

    def activities(self) -> list[Callable[..., Any]]:
        """The activities of this domain, bound to their clients: what a worker registers."""
        return [
            self.notify_customer,
            self.alert_ops,
            self.send_sms_fallback,
        ]

    @activity.defn(name="notify_customer")
    async def notify_customer(self, request: NotifyRequest) -> NotifyResult:
        """Every channel's message is claimed in one transaction, then the channels are sent at once and the ones
        sent are marked in the log together (see _send_and_mark). A channel that fails for good is skipped; a
        transient failure is raised after the other channels are done, so the retry sends only what is missing.
        An SMS to a number that opted out is not sent (logged "opted-out", named in `skipped`)."""
        result = NotifyResult()
        pending = self._messages(request, result)
        claimed = await self._store.notifications.claim_to_send([claim for _, claim, _ in pending])
        sending = [p for p in pending if p[1].key in claimed]
        result.already_sent.extend(channel for channel, claim, _ in pending if claim.key not in claimed)
        sending, unknown = await self._not_accepted_before(sending, claimed, result)
        sending = await self._without_opted_out(sending, result)
        outcomes = await self._send_and_mark(sending)
        failure: BaseException | None = next(iter(unknown.values()), None)
        failed: list[str] = [channel.value for channel in unknown]
        for (channel, claim, _), outcome in zip(sending, outcomes, strict=True):
            if isinstance(outcome, EmailPermanentError | SmsPermanentError):
                # Retrying cannot fix an invalid or opted-out recipient: go on without this message.
                # The provider's words may name the recipient: the log and the order's history get them masked
                reason = redact(str(outcome), *customer_data(request.customer))
                activity.logger.warning("%s not sent: %s", claim.key, reason)
                result.skipped[channel.value] = reason
            elif isinstance(outcome, BaseException):
                failure = failure or outcome
                failed.append(channel.value)
            else:
                result.sent.append(channel)
        if failure is not None:
            # The details name every channel still to send: the workflow retries those, each in its own order.
            if isinstance(failure, ApplicationError):
                raise ApplicationError(failure.message, failed, type=failure.type) from failure
            raise ApplicationError(str(failure), failed) from failure
        return result

    def _messages(
        self, request: NotifyRequest, result: NotifyResult
    ) -> list[tuple[Channel, NotificationClaim, RenderedMessage]]:
        """Each channel's message and its claim; a channel without a recipient is skipped in `result`."""
        pending = []
        for channel in request.channels:
            recipient = request.customer.email if channel == Channel.EMAIL else request.customer.phone
            if recipient is None:
                result.skipped[channel.value] = "no recipient for this channel"
                continue
            message = self._renderer.render(request, channel)
            key = notification_key(
                request.key or request.order_id, request.event.value, channel.value, request.occurrence
            )
            subject, fallback_to = message.subject, None
            if channel == Channel.SMS:
                # What an email fallback needs, should the network not deliver it: the address, and the subject the
                # notice's email has (the order may be long closed by then)
                subject, fallback_to = self._renderer.render(request, Channel.EMAIL).subject, request.customer.email
            claim = NotificationClaim(
                key,
                request.order_id,
                request.event.value,
                channel.value,
                recipient,
                subject,
                message.text,
                fallback_recipient=fallback_to,
            )
            pending.append((channel, claim, message))
        return pending

    async def _not_accepted_before(
        self,
        sending: list[tuple[Channel, NotificationClaim, RenderedMessage]],
        claimed: dict[str, datetime | None],
        result: NotifyResult,
    ) -> tuple[list[tuple[Channel, NotificationClaim, RenderedMessage]], dict[Channel, BaseException]]:
        """The claimed messages but an SMS that an earlier attempt got Twilio to accept and died before marking
        (its worker killed mid-send): Twilio's list of messages names it, and it is marked sent with that sid
        instead of being sent again. Returns the messages to send, and the channels whose earlier attempt could
        not be checked (Twilio unreachable: sent neither now nor blindly, the retry asks again).
        SMTP cannot be asked what it accepted: an email in that window is sent again, with the same
        Message-ID, by which mail clients and mailbox providers drop the copy."""
        kept = []
        accepted: list[tuple[str, str]] = []
        unknown: dict[Channel, BaseException] = {}
        for channel, claim, message in sending:
            since = claimed[claim.key]
            if channel != Channel.SMS or since is None:
                kept.append((channel, claim, message))
                continue
            try:
                sids = await self._sms.accepted_since(to=claim.recipient, body=message.text, since=since)
                ours = await self._store.notifications.recorded_provider_ids(sids)
            except SmsTransientError as err:
                await self._store.notifications.mark_notification_failed(claim.key, str(err))
                unknown[channel] = ApplicationError(
                    f"sms to order {claim.order_id} failed: {err}", type="SmsUnavailable"
                )
                continue
            earlier = [sid for sid in sids if sid not in ours]
            if not earlier:
                kept.append((channel, claim, message))
                continue
            activity.logger.warning("%s was accepted by Twilio before (%s): not sent again", claim.key, earlier[-1])
            accepted.append((claim.key, earlier[-1]))  # the oldest: the first attempt's
            result.already_sent.append(channel)
        if accepted:
            await self._store.notifications.mark_notifications_sent(accepted)
        return kept, unknown

    async def _without_opted_out(
        self, sending: list[tuple[Channel, NotificationClaim, RenderedMessage]], result: NotifyResult
    ) -> list[tuple[Channel, NotificationClaim, RenderedMessage]]:
        """The claimed messages but an SMS to a number that opted out: that one is logged as not sent."""
        kept = []
        for channel, claim, message in sending:
            if channel == Channel.SMS and await self._store.sms_opt_outs.is_opted_out(claim.recipient):
                await self._store.notifications.mark_notification_failed(
                    claim.key, NOT_SENT_OPTED_OUT, delivery_status=OPTED_OUT, delivery_error="texted STOP"
                )
                activity.logger.info("%s not sent: the number opted out of SMS", claim.key)
                result.skipped[channel.value] = NOT_SENT_OPTED_OUT
                continue
            kept.append((channel, claim, message))
        return kept

    async def _send_and_mark(
        self, sending: list[tuple[Channel, NotificationClaim, RenderedMessage]]
    ) -> list[BaseException | None]:
        """Send the claimed messages at once; returns each one's failure (None: sent). The ones sent are marked
        together: in one transaction when the channels finish within MARK_GRACE of each other (the usual case),
        else what went out is marked after MARK_GRACE and the rest when it is done. Cancelled, it marks what
        was sent before giving up, so a retry does not send that again."""
        sent: list[tuple[str, str]] = []  # (key, provider id) of each message a provider accepted, not marked yet

        async def send(channel: Channel, claim: NotificationClaim, message: RenderedMessage) -> None:
            sent.append((claim.key, await self._send_claimed(claim, channel, message)))

        async def mark() -> None:
            batch = sent.copy()  # sends finishing meanwhile append after it
            await self._store.notifications.mark_notifications_sent(batch)
            del sent[: len(batch)]

        tasks = [asyncio.create_task(send(channel, claim, message)) for channel, claim, message in sending]
        try:
            waiting: set[asyncio.Task[None]] = set(tasks)
            while waiting:
                _, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if waiting and sent:  # one went out, others are on their way: give them a moment to join
                    _, waiting = await asyncio.wait(waiting, timeout=MARK_GRACE)
                if sent:
                    await mark()
        finally:
            for task in tasks:
                task.cancel()  # those still running, when this attempt is cancelled or marking failed
            await asyncio.gather(*tasks, return_exceptions=True)
            if sent:
                await mark()
        return [task.exception() for task in tasks]

    @activity.defn(name="alert_ops")
    async def alert_ops(self, alert: OpsAlert) -> bool:
        """One email to the ops mailbox per (order, kind, occurrence); False if it was already sent."""
        key = f"ops:{alert.key or alert.order_id}:{alert.kind}" + (f":{alert.occurrence}" if alert.occurrence else "")
        page = f"<pre>{html.escape(alert.body)}</pre>"
        message = RenderedMessage(subject=f"[ops] {alert.subject}", text=alert.body, html=page)
        return await self._deliver_once(
            key,
            order_id=alert.order_id,
            event=alert.kind,
            channel=Channel.EMAIL,
            recipient=self._settings.ops_email,
            message=message,
        )

    @activity.defn(name="send_sms_fallback")
    async def send_sms_fallback(self, request: SmsFallbackRequest) -> SmsFallbackResult:
        """The email that stands in for a customer SMS the network did not deliver, sent once: not needed when the
        notice's own email went to the customer (most notices go by both), else the SMS's text to the address
        kept with it, through the delivery log (`<sms key>:email-fallback`, claimed before sending like every
        message). What became of it is kept with the SMS (its fallback status). A transient failure is raised
        (retried); a relay refusing the address for good is the end of it."""
        sms = await self._store.notifications.get(request.sms_key)
        if sms is None:
            return SmsFallbackResult(outcome="unknown", detail=f"no SMS {request.sms_key} in the delivery log")
        email_key = fallback_key(sms.key)
        if sms.fallback_status in FALLBACK_DONE:  # an earlier attempt decided it
            return SmsFallbackResult(outcome=sms.fallback_status or "", email_key=email_key)
        sibling = sibling_email_key(sms.key)
        own_email = await self._store.notifications.get(sibling) if sibling else None
        if own_email is not None:
            # The order sends (or sent) the notice's email itself: the customer has the message
            await self._store.notifications.set_fallback_status(sms.key, FALLBACK_NOT_NEEDED)
            return SmsFallbackResult(
                outcome=FALLBACK_NOT_NEEDED, detail=f"the notice's email {own_email.key} is {own_email.status}"
            )
        if not sms.fallback_recipient:
            await self._store.notifications.set_fallback_status(sms.key, FALLBACK_NO_EMAIL)
            return SmsFallbackResult(outcome=FALLBACK_NO_EMAIL, detail="no email address for the customer")
        subject = sms.subject or f"Order {sms.order_id}: a message we could not text you"
        message = self._renderer.render_sms_fallback(order_id=sms.order_id, notice_subject=subject, sms_text=sms.body)
        try:
            await self._deliver_once(
                email_key,
                order_id=sms.order_id,
                event=sms.event,
                channel=Channel.EMAIL,
                recipient=sms.fallback_recipient,
                message=message,
            )
        except EmailPermanentError as err:
            await self._store.notifications.set_fallback_status(sms.key, FALLBACK_REFUSED)
            detail = redact(str(err), sms.fallback_recipient)
            return SmsFallbackResult(outcome=FALLBACK_REFUSED, email_key=email_key, detail=detail)
        await self._store.notifications.set_fallback_status(sms.key, FALLBACK_SENT)
        return SmsFallbackResult(outcome=FALLBACK_SENT, email_key=email_key)

    async def _deliver_once(
        self, key: str, *, order_id: str, event: str, channel: Channel, recipient: str, message: RenderedMessage
    ) -> bool:
        """Claim the key in the delivery log, send, mark sent; False if an earlier attempt already sent it."""
        claim = NotificationClaim(key, order_id, event, channel.value, recipient, message.subject, message.text)
        if key not in await self._store.notifications.claim_notifications([claim]):
            return False
        await self._store.notifications.mark_notification_sent(key, await self._send_claimed(claim, channel, message))
        return True

    async def _send_claimed(self, claim: NotificationClaim, channel: Channel, message: RenderedMessage) -> str:
        """_send_logged, counted by channel and outcome (a failed attempt counts each time: the alert wants it)."""
        try:
            provider_id = await self._send_logged(claim, channel, message)
        except Exception:
            metrics.count_in_activity(metrics.NOTIFICATIONS, channel=channel.value, outcome="failed")
            raise
        metrics.count_in_activity(metrics.NOTIFICATIONS, channel=channel.value, outcome="sent")
        return provider_id

    async def _send_logged(self, claim: NotificationClaim, channel: Channel, message: RenderedMessage) -> str:
        """Send a claimed message and return the provider's id for it; the caller marks it sent. A failure is
        marked in the log: a permanent provider refusal is raised as is, anything else becomes a retryable
        ApplicationError."""
        key, order_id = claim.key, claim.order_id
        try:
            provider_id = await self._send(key, order_id, channel, claim.recipient, message)
        except EmailPermanentError as err:
            await self._store.notifications.mark_notification_failed(
                key, str(err), delivery_status="bounced", delivery_error=_smtp_error(err)
            )
            raise
        except SmsPermanentError as err:
            if err.code == UNSUBSCRIBED_CODE:
                # Twilio knows the number opted out (texted STOP, maybe before the engine listened): so do we now
                await self._store.sms_opt_outs.record(claim.recipient, opted_out=True, keyword=str(UNSUBSCRIBED_CODE))
                await self._store.notifications.mark_notification_failed(
                    key, str(err), delivery_status=OPTED_OUT, delivery_error=f"{err.code}: {err.message}"
                )
            else:
                await self._store.notifications.mark_notification_failed(key, str(err))
            raise
        except Exception as err:
            await self._store.notifications.mark_notification_failed(key, str(err))
            # The type names the provider the order waits for (workflows/steps.py).
            provider = "EmailUnavailable" if channel == Channel.EMAIL else "SmsUnavailable"
            text = redact(str(err), claim.recipient)
            # Chained only when nothing was masked: a cause is logged and recorded with its own text
            cause = err if text == str(err) else None
            raise ApplicationError(f"{channel.value} to order {order_id} failed: {text}", type=provider) from cause
        return provider_id

    async def _send(self, key: str, order_id: str, channel: Channel, recipient: str, message: RenderedMessage) -> str:
        if channel == Channel.EMAIL:
            return await self._email.send(
                to=recipient,
                subject=message.subject or "",
                text=message.text,
                html=message.html or message.text,
                message_id=f"<{key.replace(':', '.')}@fulfill>",
                headers={"X-Order-Id": order_id},
            )
        callback = self._sms.status_callback_url(order_id, key=key)
        return await self._sms.send(to=recipient, body=message.text, status_callback=callback)


def _smtp_error(err: EmailPermanentError) -> str:
    text = str(err)
    return text if err.code is None or str(err.code) in text else f"SMTP {err.code}: {text}"
