"""Inline SVG charts, rendered server-side (pure functions returning markup): the dashboard works offline, with
no script or chart library to download. Each bar and point carries its value (`data-value`) and a <title>."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 640, 200, 28


def _frame(title: str, body: list[str]) -> str:
    label = escape(title)
    return (
        f'<svg class="chart" role="img" aria-label="{label}" viewBox="0 0 {WIDTH} {HEIGHT + PAD}" '
        f'xmlns="http://www.w3.org/2000/svg" width="100%">'
        f"<title>{label}</title>"
        f'<line x1="{PAD}" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}" stroke="#888"/>' + "".join(body) + "</svg>"
    )


def _fmt(value: float) -> str:
    return f"{value:g}" if float(value).is_integer() else f"{value:.2f}"


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], links: Sequence[str] | None = None) -> str:
    """A bar per value, labelled below; with `links`, each bar links there (e.g. the Web UI's filtered list)."""
    top = max([*values, 0]) or 1
    step = (WIDTH - PAD) / max(len(values), 1)
    body = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = (HEIGHT - PAD) * value / top
        x = PAD + i * step + step * 0.1
        text = f"{escape(label)}: {_fmt(value)}"
        bar = (
            f'<rect class="bar" data-label="{escape(label)}" data-value="{_fmt(value)}" x="{x:.1f}" '
            f'y="{HEIGHT - h:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" fill="#3b6ea5">'
            f"<title>{text}</title></rect>"
            f'<text x="{x + step * 0.4:.1f}" y="{HEIGHT - h - 3:.1f}" font-size="10" text-anchor="middle">'
            f"{_fmt(value)}</text>"
            f'<text x="{x + step * 0.4:.1f}" y="{HEIGHT + 14}" font-size="9" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
        body.append(f'<a href="{escape(links[i])}">{bar}</a>' if links else bar)
    return _frame(title, body)


def line_chart(title: str, labels: Sequence[str], values: Sequence[float | None], *, top: float | None = None) -> str:
    """A point per value joined by a line; None (nothing measured that day) leaves a gap."""
    known = [v for v in values if v is not None]
    top = top or max([*known, 0]) or 1
    step = (WIDTH - PAD) / max(len(values) - 1, 1)
    body, path = [], []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = PAD + i * step
        body.append(f'<text x="{x:.1f}" y="{HEIGHT + 14}" font-size="9" text-anchor="middle">{escape(label)}</text>')
        if value is None:
            continue
        y = HEIGHT - (HEIGHT - PAD) * value / top
        path.append(f"{x:.1f},{y:.1f}")
        body.append(
            f'<circle class="point" data-label="{escape(label)}" data-value="{_fmt(value)}" cx="{x:.1f}" '
            f'cy="{y:.1f}" r="4" fill="#3b6ea5"><title>{escape(label)}: {_fmt(value)}</title></circle>'
        )
    if len(path) > 1:
        body.insert(0, f'<polyline fill="none" stroke="#3b6ea5" points="{" ".join(path)}"/>')
    return _frame(title, body)
