"""Customer messages from the Jinja2 templates in templates/: one context per message, rendered into the email's
subject, text part and HTML part (its CSS inlined), or into the SMS.

Each event has two templates named after it (docs/operations.md, "Changing a message", says how to change them):

- `<event>.txt` extends layout.txt and fills the blocks `subject` and `message` (one paragraph, also the SMS unless
  the template has a block `sms`);
- `<event>.html` extends layout.html (the brand's header and footer) and fills the block `content`.

A value missing from the context shows as "-" and never fails a send. A folder of overrides
(`FULFILL_EMAIL_TEMPLATES_DIR`) replaces the built-in templates of the same name; the renderer compiles every
template when it is made, so a broken one stops the worker at start with its file and line, not a send later.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import (
    ChainableUndefined,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    select_autoescape,
)
from markupsafe import Markup, escape

from common.config import Settings
from common.models import Channel, NotificationEvent, NotifyRequest

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
# What each event's .txt template must define (the .html one fills layout.html's `content`)
TEXT_BLOCKS = ("subject", "message")
# The email that stands in for an SMS the network did not deliver (not a NotificationEvent: it carries another
# message's text): sms_fallback.txt and .html, with `sms` (the text) and `notice_subject`
SMS_FALLBACK = "sms_fallback"


@dataclass(frozen=True)
class RenderedMessage:
    subject: str | None  # email only
    text: str
    html: str | None  # email only


@dataclass(frozen=True)
class Brand:
    """What the layout shows of the sender: templates read it as `brand.name` and `brand.colour`."""

    name: str = "Fulfillment"
    colour: str = "#1f4e79"  # the header's background, the buttons and the links

    @classmethod
    def from_settings(cls, settings: Settings) -> Brand:
        name = settings.email_brand_name or parseaddr(settings.email_from)[0] or cls.name
        return cls(name=name, colour=settings.email_brand_colour)


class MessageTemplateError(ValueError):
    """A template that cannot be used (syntax error, missing file or block, fails when rendered); the message
    names the file and line."""


class _Missing(ChainableUndefined):
    """A value the context lacks: "-" as the messages always showed, false in `{% if %}`, never an error."""

    __slots__ = ()

    def __str__(self) -> str:
        return "-"


def _oneline(text: str) -> str:
    """Whitespace and line breaks folded to single spaces: templates may wrap their sentences."""
    return " ".join(str(text).split())


def _link(url: Any) -> Markup:
    """`{{ tracking_url | link }}`: the URL as a link to itself (as text when it is missing or not http(s))."""
    if not url or not str(url).startswith(("https://", "http://")):
        return escape(str(url))
    return Markup('<a href="{0}">{0}</a>').format(str(url))


def _button(url: Any, label: str) -> Markup:
    """`{{ tracking_url | button("Track your parcel") }}`: a call-to-action link styled by layout.html's .button;
    nothing when the URL is missing or not http(s)."""
    if not url or not str(url).startswith(("https://", "http://")):
        return Markup("")
    return Markup('<p class="action"><a class="button" href="{0}">{1}</a></p>').format(str(url), label)


@lru_cache(maxsize=8)
def _environment(override: Path | None) -> Environment:
    """The compiled templates, one Environment per override folder: Jinja caches each template it compiles.
    Templates are read once (auto_reload off): a changed override takes effect when the worker restarts."""
    builtin = FileSystemLoader(TEMPLATES)
    loader = ChoiceLoader([FileSystemLoader(override), builtin]) if override else builtin
    env = Environment(
        loader=loader,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=_Missing,
        auto_reload=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(oneline=_oneline, link=_link, button=_button)
    return env


# The sent HTML carries its styles on each element (many mail clients drop <style>); nothing is fetched.
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False)


def _reason(text: str) -> str:
    """A cancellation reason as the customer reads it after "was cancelled": the order's own note repeats the
    word ("cancelled: customer changed mind")."""
    return text.removeprefix("cancelled: ").strip() or "cancelled"


def _where(err: TemplateError, name: str) -> str:
    if isinstance(err, TemplateSyntaxError):
        return f"{err.filename or name}, line {err.lineno}: {err.message}"
    if isinstance(err, TemplateNotFound):
        return f"{name}: template {err.name!r} not found"
    return f"{name}: {err}"


class MessageRenderer:
    """Renders customer messages; make one per process (NotificationActivities does) and reuse it."""

    def __init__(self, templates_dir: Path | None = None, brand: Brand | None = None) -> None:
        if templates_dir is not None and not templates_dir.is_dir():
            raise MessageTemplateError(f"email templates folder {templates_dir} is not a directory")
        self.brand = brand or Brand()
        self._override = templates_dir.resolve() if templates_dir else None
        self._templates = self._compile(_environment(self._override))
        if self._override:
            self._builtin = self._compile(_environment(None))
            self._warn_unused(self._override)
        else:
            self._builtin = self._templates

    @classmethod
    def from_settings(cls, settings: Settings) -> MessageRenderer:
        return cls(settings.email_templates_dir, Brand.from_settings(settings))

    def context(self, request: NotifyRequest) -> dict[str, Any]:
        """What every template of the message sees: the request's context, order_id, name (the first name),
        customer_name, event and brand; parcel is empty unless a split order's parcel is named."""
        values: dict[str, Any] = {"parcel": "", **request.context}
        if "reason" in values:
            values["reason"] = _reason(values["reason"])
        return values | {
            "order_id": request.order_id,
            "name": request.customer.name.split()[0],
            "customer_name": request.customer.name,
            "event": request.event.value,
            "brand": self.brand,
        }

    def render(self, request: NotifyRequest, channel: Channel) -> RenderedMessage:
        """An override that fails while rendering (it compiled, at start) is logged and the built-in
        templates send the message instead: a customer message is never held up by a template."""
        return self._render_or_builtin(request.event.value, channel, self.context(request))

    def render_sms_fallback(self, *, order_id: str, notice_subject: str, sms_text: str) -> RenderedMessage:
        """The email that carries an undelivered SMS's text (the log keeps no name: the greeting has none)."""
        context = {
            "order_id": order_id,
            "customer_name": "",
            "name": "",
            "event": SMS_FALLBACK,
            "parcel": "",
            "brand": self.brand,
            "sms": sms_text,
            "notice_subject": notice_subject,
        }
        return self._render_or_builtin(SMS_FALLBACK, Channel.EMAIL, context)

    def _render_or_builtin(self, name: str, channel: Channel, context: dict[str, Any]) -> RenderedMessage:
        try:
            return self._render(self._templates, name, channel, context)
        except Exception:
            if self._templates is self._builtin:
                raise
            log.exception("email template override for %s failed; sending the built-in one", name)
            return self._render(self._builtin, name, channel, context)

    # -----------------------------------------------------------------------------------------------------

    @staticmethod
    def _render(
        templates: dict[str, Template], name: str, channel: Channel, context: dict[str, Any]
    ) -> RenderedMessage:
        text = templates[f"{name}.txt"]
        if channel == Channel.SMS:
            sms = _block(text, "sms" if "sms" in text.blocks else "message", context)
            return RenderedMessage(subject=None, text=_oneline(sms), html=None)
        message = _oneline(_block(text, "message", context))
        subject = _oneline(_block(text, "subject", context))
        parts = context | {"subject": subject, "preview": message}
        page = _INLINER.inline(templates[f"{name}.html"].render(parts))
        return RenderedMessage(subject=subject, text=text.render(parts), html=page)

    def _compile(self, env: Environment) -> dict[str, Template]:
        """Every event's templates, compiled, then rendered once with a context of placeholders: a syntax error
        or a template that fails (in it or in the layout it extends) is raised now, naming its file."""
        templates: dict[str, Template] = {}
        kinds = [event.value for event in NotificationEvent] + [SMS_FALLBACK]
        for kind in kinds:
            for name in (f"{kind}.txt", f"{kind}.html"):
                try:
                    templates[name] = template = env.get_template(name)
                except TemplateError as err:
                    raise MessageTemplateError(f"email template {_where(err, name)}") from err
                missing = [b for b in TEXT_BLOCKS if name.endswith(".txt") and b not in template.blocks]
                if missing:
                    raise MessageTemplateError(f"email template {template.filename} has no block {missing[0]!r}")
        sample = {"order_id": "ORD-0", "name": "Ada", "customer_name": "Ada Lovelace", "brand": self.brand}
        for kind in kinds:
            for channel in Channel if kind != SMS_FALLBACK else [Channel.EMAIL]:
                try:
                    self._render(templates, kind, channel, sample | {"event": kind, "parcel": ""})
                except Exception as err:
                    raise MessageTemplateError(f"email template {_failed_at(err, kind)}") from err
        return templates

    @staticmethod
    def _warn_unused(override: Path) -> None:
        known = {p.name for p in TEMPLATES.iterdir()}
        for path in sorted(override.iterdir()):
            if path.is_file() and path.name not in known:
                log.warning("%s replaces no built-in email template (they are in %s)", path, TEMPLATES)


def _block(template: Template, name: str, context: dict[str, Any]) -> str:
    return "".join(template.blocks[name](template.new_context(context)))


def _failed_at(err: Exception, kind: str) -> str:
    """Where a template failed: the template frame nearest the error (Jinja puts templates in tracebacks)."""
    if isinstance(err, TemplateSyntaxError):
        return _where(err, f"{kind}.*")
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.endswith((".txt", ".html"))]
    where = f"{frames[-1].filename}, line {frames[-1].lineno}" if frames else f"of {kind}"
    what = f"template {err.name!r} not found" if isinstance(err, TemplateNotFound) else f"{type(err).__name__}: {err}"
    return f"{where}: {what}"


@lru_cache(maxsize=1)
def _default_renderer() -> MessageRenderer:
    return MessageRenderer()


def render(request: NotifyRequest, channel: Channel) -> RenderedMessage:
    """The message with the built-in templates and brand (the worker's renderer also applies the settings)."""
    return _default_renderer().render(request, channel)
