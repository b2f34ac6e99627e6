"""Customer notifications by email and SMS, exactly once per (order, event, channel).

The delivery log in the database is claimed before sending and marked after: a retried activity or a
restarted worker skips what was already sent. The only window left is a crash after the provider accepted
the message and before the log was marked; then the message is sent again (at-least-once beats a missing
shipping notice). Emails carry a deterministic Message-ID so relays and mail clients can drop that rare copy.
"""

from __future__ import annotations

import html
from urllib.parse import urlencode

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
        result = NotifyResult()
        for channel in request.channels:
            key = notification_key(request.order_id, request.event.value, channel.value, request.occurrence)
            message = render(request, channel)
            recipient = request.customer.email if channel == Channel.EMAIL else request.customer.phone
            if recipient is None:
                result.skipped[channel.value] = "no recipient for this channel"
                continue
            claimed = await self._store.claim_notification(
                key,
                order_id=request.order_id,
                event=request.event.value,
                channel=channel.value,
                recipient=recipient,
                subject=message.subject,
                body=message.text,
            )
            if not claimed:
                result.already_sent.append(channel)
                continue
            try:
                provider_id = await self._send(key, request, channel, recipient, message)
            except (EmailPermanentError, SmsPermanentError) as err:
                # Retrying cannot fix an invalid or opted-out recipient: go on without this message.
                await self._store.mark_notification_failed(key, str(err))
                result.skipped[channel.value] = str(err)
                activity.logger.warning("%s not sent: %s", key, err)
                continue
            except Exception as err:
                await self._store.mark_notification_failed(key, str(err))
                raise ApplicationError(f"{channel.value} to order {request.order_id} failed: {err}") from err
            await self._store.mark_notification_sent(key, provider_id)
            result.sent.append(channel)
        return result

    @activity.defn(name="alert_ops")
    async def alert_ops(self, alert: OpsAlert) -> bool:
        """One email to the ops mailbox per (order, kind, occurrence); False if it was already sent."""
        key = f"ops:{alert.order_id}:{alert.kind}" + (f":{alert.occurrence}" if alert.occurrence else "")
        recipient = self._settings.ops_email
        claimed = await self._store.claim_notification(
            key,
            order_id=alert.order_id,
            event=alert.kind,
            channel="email",
            recipient=recipient,
            subject=alert.subject,
            body=alert.body,
        )
        if not claimed:
            return False
        try:
            provider_id = await self._email.send(
                to=recipient,
                subject=f"[ops] {alert.subject}",
                text=alert.body,
                html=f"<pre>{html.escape(alert.body)}</pre>",
                message_id=f"<{key.replace(':', '.')}@fulfill>",
                headers={"X-Order-Id": alert.order_id},
            )
        except Exception as err:
            await self._store.mark_notification_failed(key, str(err))
            raise ApplicationError(f"ops alert for order {alert.order_id} failed: {err}") from err
        await self._store.mark_notification_sent(key, provider_id)
        return True

    async def _send(
        self, key: str, request: NotifyRequest, channel: Channel, recipient: str, message: RenderedMessage
    ) -> str:
        if channel == Channel.EMAIL:
            return await self._email.send(
                to=recipient,
                subject=message.subject or "",
                text=message.text,
                html=message.html or message.text,
                message_id=f"<{key.replace(':', '.')}@fulfill>",
                headers={"X-Order-Id": request.order_id},
            )
        callback = self._settings.sms_status_callback_url
        if callback:
            callback += "?" + urlencode({"order_id": request.order_id, "key": key})
        return await self._sms.send(to=recipient, body=message.text, status_callback=callback)
