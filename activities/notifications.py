"""Customer notifications by email and SMS, exactly once per (order, event, channel).

The delivery log in the database is claimed before sending (all channels of a notification in one
transaction), the channels are sent at once, and the ones that went out are marked sent together in one
transaction when the last channel is done (also when the attempt is cancelled half-way): a retried activity or a
restarted worker skips what was already sent. The window left is a crash after a provider accepted a message and
before that mark; then the message is sent again (at-least-once beats a missing shipping notice). The window
lasts until the slowest channel of the notification answers (milliseconds usually, at most the adapters'
timeouts) rather than until each message's own mark: that is one write transaction per notification instead of
one per channel, and a crash in those milliseconds costs the same rare duplicate as before. Emails carry a
deterministic Message-ID so relays and mail clients can drop that copy.
"""

from __future__ import annotations

import asyncio
import html

from temporalio import activity
from temporalio.exceptions import ApplicationError

from common.config import Settings
from common.db import Store
from common.db.store import NotificationClaim
from common.integrations.email import EmailPermanentError, EmailSender
from common.integrations.sms import SmsPermanentError, SmsSender
from common.messages import RenderedMessage, render
from common.models import Channel, NotifyRequest, NotifyResult, OpsAlert


def notification_key(order_id: str, event: str, channel: str, occurrence: str | None = None) -> str:
    return f"notify:{order_id}:{event}:{channel}" + (f":{occurrence}" if occurrence else "")


class NotificationActivities:
    def __init__(self, store: Store, email: EmailSender, sms: SmsSender, settings: Settings) -> None:
        self._store = store
        self._email = email
        self._sms = sms
        self._settings = settings

    @activity.defn(name="notify_customer")
    async def notify_customer(self, request: NotifyRequest) -> NotifyResult:
        """Every channel's message is claimed in one transaction, then the channels are sent at once and the ones
        sent are marked in the log together. A channel that fails for good is skipped; a transient failure is
        raised after the other channels are done, so the retry sends only what is missing."""
        result = NotifyResult()
        pending: list[tuple[Channel, NotificationClaim, RenderedMessage]] = []
        for channel in request.channels:
            recipient = request.customer.email if channel == Channel.EMAIL else request.customer.phone
            if recipient is None:
                result.skipped[channel.value] = "no recipient for this channel"
                continue
            message = render(request, channel)
            key = notification_key(request.order_id, request.event.value, channel.value, request.occurrence)
            claim = NotificationClaim(
                key, request.order_id, request.event.value, channel.value, recipient, message.subject, message.text
            )
            pending.append((channel, claim, message))
        claimed = await self._store.claim_notifications([claim for _, claim, _ in pending])
        sending = [p for p in pending if p[1].key in claimed]
        result.already_sent.extend(channel for channel, claim, _ in pending if claim.key not in claimed)
        sent: list[tuple[str, str]] = []  # (key, provider id) of each message a provider accepted

        async def send(channel: Channel, claim: NotificationClaim, message: RenderedMessage) -> None:
            sent.append((claim.key, await self._send_claimed(claim, channel, message)))

        try:
            outcomes = await asyncio.gather(
                *(send(channel, claim, message) for channel, claim, message in sending), return_exceptions=True
            )
        finally:
            # One transaction for all channels; on cancellation too, so a retry does not send them again.
            await self._store.mark_notifications_sent(sent)
        failure: BaseException | None = None
        for (channel, claim, _), outcome in zip(sending, outcomes, strict=True):
            if isinstance(outcome, EmailPermanentError | SmsPermanentError):
                # Retrying cannot fix an invalid or opted-out recipient: go on without this message.
                activity.logger.warning("%s not sent: %s", claim.key, outcome)
                result.skipped[channel.value] = str(outcome)
            elif isinstance(outcome, BaseException):
                failure = failure or outcome
            else:
                result.sent.append(channel)
        if failure is not None:
            raise failure
        return result

    @activity.defn(name="alert_ops")
    async def alert_ops(self, alert: OpsAlert) -> bool:
        """One email to the ops mailbox per (order, kind, occurrence); False if it was already sent."""
        key = f"ops:{alert.order_id}:{alert.kind}" + (f":{alert.occurrence}" if alert.occurrence else "")
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

    async def _deliver_once(
        self, key: str, *, order_id: str, event: str, channel: Channel, recipient: str, message: RenderedMessage
    ) -> bool:
        """Claim the key in the delivery log, send, mark sent; False if an earlier attempt already sent it."""
        claim = NotificationClaim(key, order_id, event, channel.value, recipient, message.subject, message.text)
        if key not in await self._store.claim_notifications([claim]):
            return False
        await self._store.mark_notification_sent(key, await self._send_claimed(claim, channel, message))
        return True

    async def _send_claimed(self, claim: NotificationClaim, channel: Channel, message: RenderedMessage) -> str:
        """Send a claimed message and return the provider's id for it; the caller marks it sent. A failure is
        marked in the log: a permanent provider refusal is raised as is, anything else becomes a retryable
        ApplicationError."""
        key, order_id = claim.key, claim.order_id
        try:
            provider_id = await self._send(key, order_id, channel, claim.recipient, message)
        except (EmailPermanentError, SmsPermanentError) as err:
            await self._store.mark_notification_failed(key, str(err))
            raise
        except Exception as err:
            await self._store.mark_notification_failed(key, str(err))
            raise ApplicationError(f"{channel.value} to order {order_id} failed: {err}") from err
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
