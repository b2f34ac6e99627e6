"""Customer notifications by email and SMS, exactly once per (order, event, channel).

The delivery log in the database is claimed before sending and marked after: a retried activity or a
restarted worker skips what was already sent. The only window left is a crash after the provider accepted
the message and before the log was marked; then the message is sent again (at-least-once beats a missing
shipping notice). Emails carry a deterministic Message-ID so relays and mail clients can drop that rare copy.
"""

from __future__ import annotations

import asyncio
import html

from temporalio import activity
from temporalio.exceptions import ApplicationError

from common.config import Settings
from common.db import Store
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
        """Each channel at once; a channel that fails for good is skipped, a transient failure is raised after
        the other channels are done (and logged), so the retry sends only what is missing."""
        channels = list(request.channels)
        outcomes = await asyncio.gather(*(self._notify_channel(request, c) for c in channels), return_exceptions=True)
        result = NotifyResult()
        failure: BaseException | None = None
        for channel, outcome in zip(channels, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failure = failure or outcome
            elif outcome is True:
                result.sent.append(channel)
            elif outcome is False:
                result.already_sent.append(channel)
            else:
                result.skipped[channel.value] = outcome
        if failure is not None:
            raise failure
        return result

    async def _notify_channel(self, request: NotifyRequest, channel: Channel) -> bool | str:
        """True sent, False already sent before, or why it was skipped."""
        key = notification_key(request.order_id, request.event.value, channel.value, request.occurrence)
        recipient = request.customer.email if channel == Channel.EMAIL else request.customer.phone
        if recipient is None:
            return "no recipient for this channel"
        message = render(request, channel)
        try:
            return await self._deliver_once(
                key,
                order_id=request.order_id,
                event=request.event.value,
                channel=channel,
                recipient=recipient,
                message=message,
            )
        except (EmailPermanentError, SmsPermanentError) as err:
            # Retrying cannot fix an invalid or opted-out recipient: go on without this message.
            activity.logger.warning("%s not sent: %s", key, err)
            return str(err)

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
        """Claim the key in the delivery log, send, mark sent; False if an earlier attempt already sent it.
        A permanent provider refusal is logged as failed and raised as is; anything else becomes a retryable
        ApplicationError."""
        claimed = await self._store.claim_notification(
            key,
            order_id=order_id,
            event=event,
            channel=channel.value,
            recipient=recipient,
            subject=message.subject,
            body=message.text,
        )
        if not claimed:
            return False
        try:
            provider_id = await self._send(key, order_id, channel, recipient, message)
        except (EmailPermanentError, SmsPermanentError) as err:
            await self._store.mark_notification_failed(key, str(err))
            raise
        except Exception as err:
            await self._store.mark_notification_failed(key, str(err))
            raise ApplicationError(f"{channel.value} to order {order_id} failed: {err}") from err
        await self._store.mark_notification_sent(key, provider_id)
        return True

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
