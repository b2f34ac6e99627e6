"""CSV parsing for `fulfill catalog import`, `fulfill catalog warehouses` and `fulfill inventory import`.

Each parser checks every row and raises `InvalidRows` listing all problems ("row 3: price: not a number
'abc'"), so a file is fixed in one go; the stores then write all rows in one transaction or none. Row
numbers are the file's line numbers as a spreadsheet shows them (the header is row 1).

Formats (a header row with these column names, in any order; UTF-8, a BOM is fine):
- products: sku, name, price (currency units, e.g. 12.00), weight (grams), dimensions (optional, LxWxH
  in cm, e.g. 10x8x12 or 10.5 x 8 x 1.2), lead_time_days (optional column: supplier lead time in days)
- warehouses: code, name, country (ISO 3166-1 alpha-2), region (optional), kind (optional: own, the default, or
  3pl) and provider (the 3PL of a 3pl warehouse, e.g. shipbob)
- stock: sku, warehouse, on_hand
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

from common.catalog.contracts import InvalidRows, ProductImport, WarehouseImport, WarehouseKind
from common.catalog.store import kind_problem
from common.inventory.contracts import StockImport

T = TypeVar("T")

SKU_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,63}$")
CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
COUNTRY_PATTERN = re.compile(r"^[A-Za-z]{2}$")
_DIMENSIONS = re.compile(r"^\s*([^xX\u00d7*]+?)\s*[xX\u00d7*]\s*([^xX\u00d7*]+?)\s*[xX\u00d7*]\s*([^xX\u00d7*]+?)\s*$")
MAX_PRICE_CENTS = 2**31 - 1


class FieldError(ValueError):
    """One bad value; the message names the column."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"{column}: {message}")


def read_text(path: str | Path) -> str:
    """The file's text, or a ValueError saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"cannot read {path}: no such file") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"cannot read {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None


def _columns(header: Sequence[str], required: Sequence[str], optional: Sequence[str]) -> list[str]:
    """The header's column names (lower case); InvalidRows for missing, unknown or repeated ones."""
    columns = [h.strip().lower() for h in header]
    problems = []
    missing = [c for c in required if c not in columns]
    if missing:
        problems.append(f"row 1: missing column(s) {', '.join(missing)} (expected {', '.join([*required, *optional])})")
    unknown = [c for c in columns if c and c not in required and c not in optional]
    if unknown:
        problems.append(f"row 1: unknown column(s) {', '.join(unknown)} (expected {', '.join([*required, *optional])})")
    repeated = sorted({c for c in columns if c and columns.count(c) > 1})
    if repeated:
        problems.append(f"row 1: repeated column(s) {', '.join(repeated)}")
    if problems:
        raise InvalidRows(problems)
    return columns


def _rows(text: str, required: Sequence[str], optional: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: stripped value}) per non-blank data row; header problems raise InvalidRows."""
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidRows(["the file is empty: expected a header row " + ",".join(required)]) from None
    except csv.Error as err:
        raise InvalidRows([f"row 1: not valid CSV ({err})"]) from None
    columns = _columns(header, required, optional)
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise InvalidRows([f"row {reader.line_num}: not valid CSV ({err})"]) from None
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(columns):
            yield line, {"": f"expected {len(columns)} values, got {len(values)}"}
            continue
        yield line, {c: v.strip() for c, v in zip(columns, values, strict=True) if c}


def _parse_all(
    text: str, required: Sequence[str], optional: Sequence[str], build: Callable[[int, dict[str, str]], T]
) -> list[T]:
    out: list[T] = []
    problems: list[str] = []
    for line, row in _rows(text, required, optional):
        if "" in row:
            problems.append(f"row {line}: {row['']}")
            continue
        try:
            out.append(build(line, row))
        except _RowProblems as err:
            problems.extend(f"row {line}: {p}" for p in err.problems)
    if problems:
        raise InvalidRows(problems)
    if not out:
        raise InvalidRows(["no data rows after the header"])
    return out


class _RowProblems(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems


class _Collector:
    """Runs each field parser, keeping every problem of the row."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def __call__(self, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except FieldError as err:
            self.problems.append(str(err))
            return None

    def done(self) -> None:
        if self.problems:
            raise _RowProblems(self.problems)


# ---------------------------------------------------------------------------------------------------------
# Field parsers


def _required(column: str, value: str) -> str:
    if not value:
        raise FieldError(column, "is empty")
    return value


def parse_sku(value: str, column: str = "sku") -> str:
    _required(column, value)
    if not SKU_PATTERN.match(value):
        raise FieldError(
            column, f"{value!r} is not a valid SKU (upper-case letters, digits, '.', '_', '-'; at most 64)"
        )
    return value


def parse_name(value: str, column: str = "name") -> str:
    _required(column, value)
    if len(value) > 200:
        raise FieldError(column, f"is {len(value)} characters long; at most 200")
    return value


def _decimal(column: str, value: str) -> Decimal:
    _required(column, value)
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise FieldError(column, f"not a number {value!r}") from None
    if not number.is_finite():
        raise FieldError(column, f"not a number {value!r}")
    return number


def parse_price_cents(value: str, column: str = "price") -> int:
    """'12.00' / '12' / '0.5' currency units -> cents; at most 2 decimal places, not negative."""
    number = _decimal(column, value)
    if number < 0:
        raise FieldError(column, f"must not be negative, got {value!r}")
    cents = number * 100
    if cents != cents.to_integral_value():
        raise FieldError(column, f"{value!r} has more than 2 decimal places")
    if cents > MAX_PRICE_CENTS:
        raise FieldError(column, f"{value!r} is too large")
    return int(cents)


def parse_positive_int(value: str, column: str, unit: str) -> int:
    number = _decimal(column, value)
    if number != number.to_integral_value():
        raise FieldError(column, f"must be a whole number of {unit}, got {value!r}")
    if number <= 0:
        raise FieldError(column, f"must be a positive number of {unit}, got {value!r}")
    if number > 2**31 - 1:
        raise FieldError(column, f"{value!r} is too large")
    return int(number)


def parse_count(value: str, column: str = "on_hand") -> int:
    number = _decimal(column, value)
    if number != number.to_integral_value():
        raise FieldError(column, f"must be a whole number of units, got {value!r}")
    if number < 0:
        raise FieldError(column, f"must not be negative, got {value!r}")
    if number > 2**31 - 1:
        raise FieldError(column, f"{value!r} is too large")
    return int(number)


def parse_dimensions_mm(value: str, column: str = "dimensions") -> tuple[int, int, int] | None:
    """'10x8x12' (cm, decimals allowed) -> (100, 80, 120) mm; empty -> None."""
    if not value:
        return None
    match = _DIMENSIONS.match(value)
    if not match:
        raise FieldError(column, f"expected length x width x height in cm like '10x8x12', got {value!r}")
    out = []
    for part in match.groups():
        try:
            cm = Decimal(part.strip())
        except InvalidOperation:
            raise FieldError(column, f"not a number {part.strip()!r} in {value!r}") from None
        if not cm.is_finite() or cm <= 0:
            raise FieldError(column, f"each dimension must be a positive number of cm, got {value!r}")
        mm = int((cm * 10).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        if mm < 1:
            raise FieldError(column, f"{part.strip()} cm is below 1 mm in {value!r}")
        if mm > 100_000:
            raise FieldError(column, f"{part.strip()} cm is too large in {value!r}")
        out.append(mm)
    return (out[0], out[1], out[2])


def parse_lead_time(value: str, column: str = "lead_time_days") -> int | None:
    if not value:
        return None
    number = _decimal(column, value)
    if number != number.to_integral_value() or number < 0:
        raise FieldError(column, f"must be a whole number of days >= 0, got {value!r}")
    if number > 3650:
        raise FieldError(column, f"{value!r} days is more than 10 years")
    return int(number)


# ---------------------------------------------------------------------------------------------------------
# Files


def parse_products(text: str) -> list[ProductImport]:
    seen: dict[str, int] = {}

    def build(line: int, row: dict[str, str]) -> ProductImport:
        c = _Collector()
        sku = c(lambda: parse_sku(row["sku"]))
        name = c(lambda: parse_name(row["name"]))
        price = c(lambda: parse_price_cents(row["price"]))
        weight = c(lambda: parse_positive_int(row["weight"], "weight", "grams"))
        dims = c(lambda: parse_dimensions_mm(row.get("dimensions", "")))
        lead = c(lambda: parse_lead_time(row.get("lead_time_days", "")))
        if sku is not None:
            if sku in seen:
                c.problems.append(f"sku: {sku!r} already on row {seen[sku]}")
            seen.setdefault(sku, line)
        c.done()
        assert sku is not None and name is not None and price is not None and weight is not None
        return ProductImport(line, sku, name, price, weight, dims, lead)

    return _parse_all(text, ["sku", "name", "price", "weight"], ["dimensions", "lead_time_days"], build)


def _kind_and_provider(row: dict[str, str]) -> tuple[WarehouseKind, str | None]:
    """Who runs the warehouse: we do (own, the default), or a 3PL, named by its provider."""
    value = row.get("kind", "").strip().lower()
    try:
        kind = WarehouseKind(value or WarehouseKind.OWN)
    except ValueError:
        raise FieldError("kind", f"must be own or 3pl, got {value!r}") from None
    provider = row.get("provider", "").strip().lower() or None
    problem = kind_problem(kind, provider)
    if problem is not None:
        field, _, message = problem.partition(": ")
        raise FieldError(field, message)
    return kind, provider


def parse_warehouses(text: str) -> list[WarehouseImport]:
    seen: dict[str, int] = {}

    def code_of(value: str) -> str:
        _required("code", value)
        if not CODE_PATTERN.match(value):
            raise FieldError(
                "code", f"{value!r} is not a valid warehouse code (letters, digits, '.', '_', '-'; at most 32)"
            )
        return value

    def country_of(value: str) -> str:
        _required("country", value)
        if not COUNTRY_PATTERN.match(value):
            raise FieldError("country", f"must be an ISO 3166-1 alpha-2 code like 'GB', got {value!r}")
        return value.upper()

    def region_of(value: str) -> str | None:
        if len(value) > 100:
            raise FieldError("region", f"is {len(value)} characters long; at most 100")
        return value or None

    def build(line: int, row: dict[str, str]) -> WarehouseImport:
        c = _Collector()
        code = c(lambda: code_of(row["code"]))
        name = c(lambda: parse_name(row["name"]))
        country = c(lambda: country_of(row["country"]))
        region = c(lambda: region_of(row.get("region", "")))
        run = c(lambda: _kind_and_provider(row))
        if code is not None:
            if code in seen:
                c.problems.append(f"code: {code!r} already on row {seen[code]}")
            seen.setdefault(code, line)
        c.done()
        assert code is not None and name is not None and country is not None and run is not None
        return WarehouseImport(line, code, name, country, region, *run)

    return _parse_all(text, ["code", "name", "country"], ["region", "kind", "provider"], build)


def parse_stock(text: str) -> list[StockImport]:
    seen: dict[tuple[str, str], int] = {}

    def warehouse_of(value: str) -> str:
        return _required("warehouse", value)

    def build(line: int, row: dict[str, str]) -> StockImport:
        c = _Collector()
        sku = c(lambda: parse_sku(row["sku"]))
        warehouse = c(lambda: warehouse_of(row["warehouse"]))
        on_hand = c(lambda: parse_count(row["on_hand"]))
        if sku is not None and warehouse is not None:
            key = (sku, warehouse)
            if key in seen:
                c.problems.append(f"{sku} at {warehouse} already on row {seen[key]}")
            seen.setdefault(key, line)
        c.done()
        assert sku is not None and warehouse is not None and on_hand is not None
        return StockImport(line, sku, warehouse, on_hand)

    return _parse_all(text, ["sku", "warehouse", "on_hand"], [], build)
