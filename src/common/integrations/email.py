"""Email through any SMTP relay with aiosmtplib (the sandbox SMTP server by default)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from common.config import Settings
from common.integrations import NotificationError


class EmailPermanentError(NotificationError):
    """The relay refused the message for good (5xx: unknown mailbox, policy, auth); do not retry."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class EmailTransientError(NotificationError):
    """Connection problems, timeouts and 4xx answers; another attempt may succeed."""

    retryable = True

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class EmailSender:
    def __init__(self, settings: Settings, *, timeout: float = 15.0) -> None:
        self._settings = settings
        self._timeout = timeout

    def build(
        self, *, to: str, subject: str, text: str, html: str, message_id: str, headers: dict[str, str]
    ) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self._settings.email_from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(usegmt=True)
        # Deterministic per (order, event, channel): relays and clients can drop a rare duplicate
        msg["Message-ID"] = message_id
        for name, value in headers.items():
            del msg[name]
            msg[name] = value
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        return msg

    async def send(
        self, *, to: str, subject: str, text: str, html: str, message_id: str, headers: dict[str, str]
    ) -> str:
        """Sends one multipart/alternative message; returns its Message-ID."""
        msg = self.build(to=to, subject=subject, text=text, html=html, message_id=message_id, headers=headers)
        s = self._settings
        try:
            errors, _reply = await aiosmtplib.send(
                msg,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password,
                use_tls=s.smtp_use_tls,
                start_tls=s.smtp_starttls,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as err:
            codes = [r.code for r in err.recipients]
            detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in err.recipients)
            if any(500 <= c < 600 for c in codes):
                raise EmailPermanentError(f"recipient refused: {detail}", max(codes)) from err
            raise EmailTransientError(f"recipient deferred: {detail}", max(codes, default=None)) from err
        except aiosmtplib.SMTPResponseException as err:
            if 500 <= err.code < 600:
                raise EmailPermanentError(f"SMTP {err.code}: {err.message}", err.code) from err
            raise EmailTransientError(f"SMTP {err.code}: {err.message}", err.code) from err
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
            where = f"{s.smtp_host}:{s.smtp_port}"
            raise EmailTransientError(f"SMTP relay {where} unavailable: {err}") from err
        if errors:
            # Only reached with several recipients, some refused; we send to one, so report it loudly
            detail = "; ".join(f"{rcpt}: {resp.code} {resp.message}" for rcpt, resp in errors.items())
            raise EmailPermanentError(f"recipient refused: {detail}")
        return message_id
