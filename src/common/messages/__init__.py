"""Customer-facing messages: the email (subject, text and HTML parts) and SMS of each NotificationEvent, from the
Jinja2 templates in templates/ (docs/operations.md, "Changing a message", says how to change them). See renderer.py."""

from common.messages.renderer import Brand, MessageRenderer, MessageTemplateError, RenderedMessage, render

__all__ = ["Brand", "MessageRenderer", "MessageTemplateError", "RenderedMessage", "render"]
