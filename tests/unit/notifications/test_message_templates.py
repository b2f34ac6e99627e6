"""The Jinja2 templates of customer messages (src/common/messages/templates): every event's text and HTML parts
from one context, escaping, inlined CSS, the brand, the override folder and its errors."""

from __future__ import annotations

import logging
import re
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.config import Settings
from common.messages import Brand, MessageRenderer, MessageTemplateError, RenderedMessage, render
from common.messages.renderer import TEMPLATES
from common.models import Channel, NotificationEvent, NotifyRequest
from tests.orders import sample_order

ROOT = Path(__file__).resolve().parents[3]
# Every value a workflow puts in a message's context (workflows/order/, workflows/returns.py)
FULL_CONTEXT = {
    "carrier": "SandboxPost",
    "tracking_number": "SBX1",
    "tracking_url": "https://track.example/SBX1",
    "label_url": "https://labels.example/RMA-1.pdf",
    "short": "POSTER-A2 x1",
    "reason": "cancelled: customer changed mind",
    "what": "MUG-RED x2",
    "amount": "25.00 USD",
    "estimate": "2026-05-01",
    "problem": "address not found",
    "rma_id": "RMA-ORD-1001-1",
    "items": "MUG-RED x1",
    "days": "14",
    "replacement_order_id": "ORD-1001-R1",
}
SCRIPT_NAME = "<script>alert(1)</script> & Co"


def request(event: NotificationEvent, name: str | None = None, **context: str) -> NotifyRequest:
    order = sample_order()
    customer = order.customer if name is None else order.customer.model_copy(update={"name": name})
    return NotifyRequest(
        order_id=order.order_id, event=event, customer=customer, channels=list(customer.channels), context=context
    )


class _Text(HTMLParser):
    """The visible text of an HTML document, and of its elements of one class."""

    def __init__(self, cls: str) -> None:
        super().__init__()
        self.cls, self.depth, self.all, self.of_class = cls, 0, [], []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("title", "style") or (dict(attrs).get("class") == "preview"):
            self.skip += 1
        elif self.depth or self.cls in (dict(attrs).get("class") or "").split():
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            self.skip -= 1
        elif self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.all.append(data)
            if self.depth:
                self.of_class.append(data)


def visible(page: str, cls: str = "message") -> tuple[str, str]:
    """(the page's visible text, the text of its elements of class `cls`), whitespace folded."""
    parser = _Text(cls)
    parser.feed(page)
    return " ".join("".join(parser.all).split()), " ".join("".join(parser.of_class).split())


def email(req: NotifyRequest, renderer: MessageRenderer | None = None) -> tuple[str, str, str]:
    msg = (renderer or MessageRenderer()).render(req, Channel.EMAIL)
    assert msg.subject is not None and msg.html is not None
    return msg.subject, msg.text, msg.html


MISSING = re.compile(r"(^|\s|\()-(\s|\)|\.|,|$)")  # how a value missing from the context shows


@pytest.mark.parametrize("event", list(NotificationEvent))
def test_every_event_has_its_subject_text_and_html_from_one_context(event: NotificationEvent) -> None:
    req = request(event, **FULL_CONTEXT)
    subject, text, page = email(req)
    sms = MessageRenderer().render(req, Channel.SMS)
    assert sms == RenderedMessage(subject=None, text=sms.text, html=None)
    message = sms.text  # the text block: the SMS and the body of the text part
    assert subject and "ORD-1001" in subject and "\n" not in subject
    assert not MISSING.search(message), f"{event}: a value is missing from {message!r}"
    assert text == f"Hello Ada Lovelace,\n\n{message}\n\n-- The Fulfillment team\n"
    shown, html_message = visible(page)
    # The HTML part says what the text part says: the two templates of an event keep the same wording
    assert html_message == message
    assert shown.startswith("Fulfillment Hello Ada Lovelace,") and "The Fulfillment team" in shown
    assert f"<title>{subject}</title>" in page


def test_the_wording_is_the_messages_of_before() -> None:
    """A few sentences exactly as the format strings had them (tests elsewhere grep the messages)."""
    ctx = FULL_CONTEXT
    assert render(request(NotificationEvent.SHIPPED, **ctx), Channel.SMS).text == (
        "Order ORD-1001 is on its way with SandboxPost. Tracking number SBX1: https://track.example/SBX1"
    )
    assert render(request(NotificationEvent.RETURN_LABEL, **ctx), Channel.EMAIL).subject == (
        "Order ORD-1001: your return label (RMA-ORD-1001-1)"
    )
    assert render(request(NotificationEvent.CANCELLED, **ctx), Channel.SMS).text == (
        "Order ORD-1001 was cancelled (customer changed mind). Nothing was shipped and you will not be charged for it."
    )


def test_tracking_and_label_urls_are_links_in_the_html_part() -> None:
    _, text, page = email(request(NotificationEvent.RETURN_LABEL, **FULL_CONTEXT))
    assert "https://labels.example/RMA-1.pdf" in text and "<a " not in text
    assert page.count('href="https://labels.example/RMA-1.pdf"') == 2  # in the sentence and the button
    assert 'href="https://track.example/SBX1"' in page
    _, _, shipped = email(request(NotificationEvent.SHIPPED, **FULL_CONTEXT))
    assert re.search(r'<a class="button" href="https://track.example/SBX1"[^>]*>Track your parcel</a>', shipped)


def test_only_web_addresses_become_links() -> None:
    _, _, page = email(request(NotificationEvent.SHIPPED, tracking_url="javascript:alert(1)"))
    assert "href" not in page and "javascript:alert(1)" in page


def test_html_is_escaped_and_text_is_not() -> None:
    req = request(NotificationEvent.SHIPPED, name=SCRIPT_NAME, **(FULL_CONTEXT | {"carrier": "<b>Post</b>"}))
    _, text, page = email(req)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in page
    assert "<b>Post</b>" not in page and "&lt;b&gt;Post&lt;/b&gt;" in page
    assert text.startswith(f"Hello {SCRIPT_NAME},") and "with <b>Post</b>." in text
    sms = render(req, Channel.SMS).text
    assert "with <b>Post</b>." in sms


def test_css_is_inlined_into_style_attributes() -> None:
    _, _, page = email(request(NotificationEvent.SHIPPED, **FULL_CONTEXT))
    assert "<style" not in page
    assert re.search(r'<td class="header" style="[^"]*background-color: #1f4e79', page)
    assert re.search(r'<a class="button" [^>]*style="[^"]*color: #ffffff', page)  # .button beats `a`
    assert page.count("style=") > 10


def test_the_brand_comes_from_the_settings() -> None:
    settings = Settings(email_from="Acme Goods <orders@acme.example>", email_brand_colour="#aa3300")
    assert Brand.from_settings(settings) == Brand(name="Acme Goods", colour="#aa3300")
    assert Brand.from_settings(Settings(email_brand_name="Acme")).name == "Acme"
    assert Brand.from_settings(Settings(email_from="orders@acme.example")).name == "Fulfillment"
    _, text, page = email(request(NotificationEvent.DELIVERED), MessageRenderer.from_settings(settings))
    assert text.endswith("-- The Acme Goods team\n") and "Acme Goods" in visible(page, "header")[1]
    assert re.search(r'class="header" style="[^"]*background-color: #aa3300', page)
    with pytest.raises(ValidationError):
        Settings(email_brand_colour="red; background: url(x)")


@pytest.mark.parametrize("event", list(NotificationEvent))
def test_a_missing_value_shows_a_dash_and_never_fails(event: NotificationEvent) -> None:
    subject, text, page = email(request(event))
    assert "ORD-1001" in subject and text.startswith("Hello Ada Lovelace,")
    assert 'href="-"' not in page and 'class="button"' not in page  # no link to nowhere
    if event == NotificationEvent.SHIPPED:
        assert "with -. Tracking number -: -" in render(request(event), Channel.SMS).text


def test_the_render_function_uses_the_built_in_templates() -> None:
    req = request(NotificationEvent.SHIPPED, **FULL_CONTEXT)
    assert render(req, Channel.EMAIL) == MessageRenderer().render(req, Channel.EMAIL)


# ----------------------------------------------------------------------------------------------- overrides


def at(path: Path, problem: str) -> str:
    """The start of the error for a template file: its path, then what is wrong (a regex for pytest.raises)."""
    return re.escape(f"email template {path}{problem}")


def test_an_override_replaces_its_template_and_leaves_the_others(tmp_path: Path) -> None:
    (tmp_path / "shipped.txt").write_text(
        '{% extends "layout.txt" %}\n'
        "{% block subject %}Your order {{ order_id }} is on the road{% endblock %}\n"
        "{% block message %}{{ carrier }} has it: {{ tracking_url }}{% endblock %}\n"
    )
    renderer = MessageRenderer.from_settings(Settings(email_templates_dir=tmp_path))
    shipped = request(NotificationEvent.SHIPPED, **FULL_CONTEXT)
    subject, text, page = email(shipped, renderer)
    assert subject == "Your order ORD-1001 is on the road"
    assert "SandboxPost has it: https://track.example/SBX1" in text
    assert renderer.render(shipped, Channel.SMS).text == "SandboxPost has it: https://track.example/SBX1"
    assert page == email(shipped)[2].replace("Order ORD-1001 has shipped", subject).replace(
        "Order ORD-1001 is on its way with SandboxPost. Tracking number SBX1: https://track.example/SBX1",
        "SandboxPost has it: https://track.example/SBX1",
    )  # the built-in shipped.html, with the override's subject and preview text
    delivered = request(NotificationEvent.DELIVERED, **FULL_CONTEXT)
    assert renderer.render(delivered, Channel.EMAIL) == render(delivered, Channel.EMAIL)


def test_an_sms_block_replaces_the_message_in_the_sms_only(tmp_path: Path) -> None:
    built_in = (TEMPLATES / "return_label.txt").read_text()
    (tmp_path / "return_label.txt").write_text(
        built_in + "{% block sms %}Return {{ rma_id }}: {{ label_url }}{% endblock %}"
    )
    renderer = MessageRenderer(tmp_path)
    req = request(NotificationEvent.RETURN_LABEL, **FULL_CONTEXT)
    assert renderer.render(req, Channel.SMS).text == "Return RMA-ORD-1001-1: https://labels.example/RMA-1.pdf"
    assert renderer.render(req, Channel.EMAIL) == render(req, Channel.EMAIL)


def test_an_override_of_the_layout_rebrands_every_email(tmp_path: Path) -> None:
    layout = (TEMPLATES / "layout.html").read_text()
    (tmp_path / "layout.html").write_text(layout.replace("&mdash; The {{ brand.name }} team", "Cheers, Ops"))
    renderer = MessageRenderer(tmp_path)
    for event in NotificationEvent:
        page = email(request(event), renderer)[2]
        assert "Cheers, Ops" in page and "The Fulfillment team" not in page


def test_a_broken_override_names_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "delivered.html").write_text('{% extends "layout.html" %}\n{% block content %}\n{% if %}\n')
    with pytest.raises(MessageTemplateError, match=at(tmp_path / "delivered.html", ", line 3: ")):
        MessageRenderer(tmp_path)


def test_a_broken_override_of_the_layout_names_the_layout(tmp_path: Path) -> None:
    (tmp_path / "layout.txt").write_text("Hello {{ customer_name }\n")
    with pytest.raises(MessageTemplateError, match=at(tmp_path / "layout.txt", ", line 1: ")):
        MessageRenderer(tmp_path)


def test_an_override_that_fails_when_rendered_is_caught_at_start(tmp_path: Path) -> None:
    (tmp_path / "cancelled.html").write_text('{% extends "layout.html" %}{% block content %}{{ 1 // 0 }}{% endblock %}')
    with pytest.raises(MessageTemplateError, match=at(tmp_path / "cancelled.html", ", line 1: ZeroDivisionError")):
        MessageRenderer(tmp_path)


def test_an_override_text_template_needs_a_subject_and_a_message(tmp_path: Path) -> None:
    (tmp_path / "shipped.txt").write_text('{% extends "layout.txt" %}{% block message %}Shipped{% endblock %}')
    with pytest.raises(MessageTemplateError, match=at(tmp_path / "shipped.txt", " has no block 'subject'")):
        MessageRenderer(tmp_path)


def test_an_override_that_extends_a_missing_template(tmp_path: Path) -> None:
    (tmp_path / "shipped.html").write_text('{% extends "brand.html" %}')
    with pytest.raises(
        MessageTemplateError,
        match=at(tmp_path / "shipped.html", ", line 1: template 'brand.html' not found"),
    ):
        MessageRenderer(tmp_path)


def test_an_override_folder_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(MessageTemplateError, match="is not a directory"):
        MessageRenderer.from_settings(Settings(email_templates_dir=tmp_path / "nowhere"))


def test_an_override_that_fails_on_real_values_sends_the_built_in_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Compiled and dry-run at start, it fails only on a value the dry run did not have: the customer still
    gets the message, from the built-in template, and the failure is logged."""
    (tmp_path / "return_expired.txt").write_text(
        '{% extends "layout.txt" %}{% block subject %}Expired{% endblock %}'
        "{% block message %}{% if days %}{{ 1 // 0 }}{% endif %}{% endblock %}"
    )
    renderer = MessageRenderer(tmp_path)
    req = request(NotificationEvent.RETURN_EXPIRED, **FULL_CONTEXT)
    with caplog.at_level(logging.ERROR, logger="common.messages.renderer"):
        assert renderer.render(req, Channel.EMAIL) == render(req, Channel.EMAIL)
    assert "return_expired failed; sending the built-in one" in caplog.text


def test_an_override_file_that_replaces_nothing_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "shiped.txt").write_text("typo")
    with caplog.at_level(logging.WARNING, logger="common.messages.renderer"):
        MessageRenderer(tmp_path)
    assert f"{tmp_path / 'shiped.txt'} replaces no built-in email template" in caplog.text


# --------------------------------------------------------------------------------------------- packaging


def test_every_template_is_package_data() -> None:
    """`pip install .` (deploy/Dockerfile) ships only what pyproject's package-data names."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["common"]
    files = [p.relative_to(ROOT / "src" / "common").as_posix() for p in TEMPLATES.rglob("*") if p.is_file()]
    # two per event, the two layouts, and the SMS fallback's two
    assert len(files) == 2 * len(NotificationEvent) + 4
    assert [f for f in files if not any(fnmatch(f, pattern) for pattern in patterns)] == []


def test_an_undelivered_sms_comes_by_email_in_the_brands_layout() -> None:
    renderer = MessageRenderer(brand=Brand(name="Acme & Co", colour="#aa3300"))
    sms = "Order ORD-7 is out for delivery today with QuickShip. Track it: https://t.example/1?a=1&b=<2>"
    message = renderer.render_sms_fallback(order_id="ORD-7", notice_subject="Order ORD-7 is out", sms_text=sms)
    assert message.subject == "Order ORD-7 is out"
    assert message.text.startswith("Hello,\n")  # the log keeps no name: no "Hello -,"
    assert sms in message.text and message.text.rstrip().endswith("-- The Acme & Co team")
    assert message.html is not None
    assert "Acme &amp; Co" in message.html and "b=&lt;2&gt;" in message.html and "<style" not in message.html
    assert "border-left:4px solid #aa3300" in message.html.replace(": ", ":")
