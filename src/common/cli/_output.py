"""How the `fulfill` commands print: one JSON style for every `--json` (`jsonable`), and tables that read in a
terminal as narrow as 80 columns (SKUs, ids and times whole; notes wrap; stored text never read as markup)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel
from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.table import Column, Table
from rich.text import Text


def jsonable(value: Any) -> Any:
    """`value` as JSON data: dataclasses and models as objects with their fields by name, timestamps ISO-8601 in
    UTC ending in Z, dates ISO-8601, enums by value, decimals as strings (exact)."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    elif is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # Decimal, Path, URLs...


def utc(at: datetime) -> datetime:
    """`at` in UTC; a naive time (SQLite gives them back so) is UTC already."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def stamp(at: datetime) -> str:
    """A time for a table cell: date and time in UTC, a space between (where a narrow column wraps it)."""
    return f"{utc(at):%Y-%m-%d %H:%M:%S}"


# Width a wrapped note gets before the other columns are widened: a few words a line.
_READABLE = 24


class PlainTable(Table):
    """A table whose string cells are shown as they are: stored text (an ops subject "[ops] ...", a note) is
    never read as Rich markup. A styled cell is passed as a `Text`."""

    def add_row(self, *renderables: RenderableType | None, **kwargs: Any) -> None:
        super().add_row(*(Text(r) if isinstance(r, str) else r for r in renderables), **kwargs)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        self._fit(options.max_width)
        yield from super().__rich_console__(console, options)

    def _fit(self, max_width: int) -> None:
        """Give each column room for its longest word first, key columns their whole text; then widen the
        others to their whole text, those that need least first, so that short columns stay on one line and the
        longest text wraps. (Rich alone shrinks the widest columns evenly, which cuts a header or an id short
        while a note still has room to wrap.)"""
        flexible = [i for i, c in enumerate(self.columns) if not c.no_wrap]
        for i in flexible:
            self.columns[i].width = None
        budget = max_width - self._extra_width - sum(self._get_padding_width(i) for i in range(len(self.columns)))
        natural = [_widest(c, _line_len) for c in self.columns]
        widths = [
            n if c.no_wrap else max(_widest(c, _word_len), c.min_width or 0)
            for n, c in zip(natural, self.columns, strict=True)
        ]
        spare = budget - sum(widths)
        if sum(natural) <= budget or spare < 0:
            return  # it fits as it is, or nothing can: Rich folds what it must
        # The column that lacks most (the note, as a rule) gets a readable width first, then takes what the
        # others leave.
        pending = sorted(flexible, key=lambda i: natural[i] - widths[i])
        note = pending.pop()
        spare = _widen(widths, [min(n, _READABLE) for n in natural], [note], spare)
        spare = _widen(widths, natural, pending, spare)
        _widen(widths, natural, [note], spare)
        for i in flexible:
            self.columns[i].width = widths[i]


def _widen(widths: list[int], natural: list[int], columns: list[int], spare: int) -> int:
    """Widen `columns` (those that need least first) towards their natural width, sharing `spare` evenly once
    it cannot cover the next one; the spare left."""
    pending = list(columns)
    while pending and spare > 0:
        first = pending[0]
        share = spare // len(pending)
        if natural[first] - widths[first] <= share:
            spare -= natural[first] - widths[first]
            widths[first] = natural[first]
            pending.pop(0)
            continue
        for n, i in enumerate(pending):
            widths[i] += share + (1 if n < spare % len(pending) else 0)
        return 0
    return spare


def _widest(column: Column, measure: Callable[[str], int]) -> int:
    texts = [str(column.header), *(cell.plain for cell in column.cells if isinstance(cell, Text))]
    return max((measure(text) for text in texts), default=0)


def _line_len(text: str) -> int:
    return max((cell_len(line) for line in text.splitlines()), default=0)


def _word_len(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def table(*columns: str | Column, title: str | None = None) -> PlainTable:
    """A table for a terminal as narrow as 80 columns: a rule under the header and two spaces between columns
    instead of a box. Plain string columns wrap (notes, lists of lines); `key` columns never do."""
    # fold, not "…": should even the shortest words not fit, a word goes on over two lines rather than be cut
    heads = [Column(c, overflow="fold") if isinstance(c, str) else c for c in columns]
    return PlainTable(*heads, title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)


def key(header: str) -> Column:
    """A column of SKUs, ids, codes or statuses: kept whole (not wrapped, not cut short); only if the terminal
    leaves no room at all is it folded onto a second line, never truncated."""
    return Column(header, no_wrap=True, overflow="fold")


def time_column(header: str = "time (UTC)") -> Column:
    """A `stamp` column: whole on one line when there is room, else the date over the time."""
    return Column(header, min_width=len("2026-12-01"), overflow="fold")
