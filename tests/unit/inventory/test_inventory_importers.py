"""CSV parsing for the catalogue, warehouse and stock imports: good files, and bad ones reported whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.catalog.contracts import InvalidRows, ProductImport, WarehouseImport, WarehouseKind
from common.inventory.contracts import StockImport
from common.inventory.importers import (
    parse_dimensions_mm,
    parse_price_cents,
    parse_products,
    parse_stock,
    parse_warehouses,
    read_text,
)


def _problems(fn, text: str) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRows) as info:
        fn(text)
    return info.value.problems


def test_products_good_file() -> None:
    text = (
        "\ufeffSKU, Name ,price,weight,dimensions\n"
        "MUG-RED,Red mug,12.00,350,10x8x12\n"
        "\n"
        '"TEE-M","T-shirt, size M",18,180,\n'
        "POSTER-A2,Poster,0.5,120,59.4 X 42 x 0.25\n"
    )
    assert parse_products(text) == [
        ProductImport(2, "MUG-RED", "Red mug", 1200, 350, (100, 80, 120), None),
        ProductImport(4, "TEE-M", "T-shirt, size M", 1800, 180, None, None),
        ProductImport(5, "POSTER-A2", "Poster", 50, 120, (594, 420, 3), None),
    ]


def test_products_optional_lead_time_column() -> None:
    text = "sku,name,price,weight,dimensions,lead_time_days\nMUG-RED,Red mug,12,350,,14\nTEE-M,Tee,1,1,,\n"
    rows = parse_products(text)
    assert [(r.sku, r.lead_time_days) for r in rows] == [("MUG-RED", 14), ("TEE-M", None)]


def test_products_every_bad_row_is_reported() -> None:
    text = (
        "sku,name,price,weight,dimensions\n"
        "MUG-RED,Red mug,12.00,350,10x8x12\n"
        "TEE-M,T-shirt,abc,180,\n"
        "mug-blue,,1.234,-3,10x8\n"
        "MUG-RED,Again,1,1.5,0x1x1\n"
        "BOOK,Book,1,1\n"
    )
    assert _problems(parse_products, text) == [
        "row 3: price: not a number 'abc'",
        "row 4: sku: 'mug-blue' is not a valid SKU (upper-case letters, digits, '.', '_', '-'; at most 64)",
        "row 4: name: is empty",
        "row 4: price: '1.234' has more than 2 decimal places",
        "row 4: weight: must be a positive number of grams, got '-3'",
        "row 4: dimensions: expected length x width x height in cm like '10x8x12', got '10x8'",
        "row 5: weight: must be a whole number of grams, got '1.5'",
        "row 5: dimensions: each dimension must be a positive number of cm, got '0x1x1'",
        "row 5: sku: 'MUG-RED' already on row 2",
        "row 6: expected 5 values, got 4",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is empty"),
        ("sku,name,price\n", "row 1: missing column(s) weight"),
        ("sku,name,price,weight,colour\nA,a,1,1,red\n", "row 1: unknown column(s) colour"),
        ("sku,name,price,weight,sku\n", "row 1: repeated column(s) sku"),
        ("sku,name,price,weight\n\n", "no data rows after the header"),
    ],
)
def test_products_bad_files(text: str, problem: str) -> None:
    [message] = _problems(parse_products, text)
    assert message.startswith(problem), message


def test_invalid_rows_message_lists_everything() -> None:
    err = InvalidRows(["row 3: price: not a number 'abc'", "row 4: name: is empty"])
    assert str(err) == "2 problems, nothing was imported:\n  row 3: price: not a number 'abc'\n  row 4: name: is empty"


@pytest.mark.parametrize(
    ("value", "cents"), [("12.00", 1200), ("12", 1200), ("0.5", 50), ("0", 0), ("1e2", 10000), ("19.99", 1999)]
)
def test_prices(value: str, cents: int) -> None:
    assert parse_price_cents(value) == cents


@pytest.mark.parametrize(
    ("value", "message"),
    [("abc", "not a number"), ("-1", "negative"), ("1.005", "2 decimal"), ("NaN", "not a number"), ("", "empty")],
)
def test_bad_prices(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_price_cents(value)


def test_dimensions() -> None:
    assert parse_dimensions_mm("10x8x12") == (100, 80, 120)
    assert parse_dimensions_mm(" 10.5 \u00d7 8 * 1.25 ") == (105, 80, 13)  # cm -> mm, half up
    assert parse_dimensions_mm("") is None
    for bad in ("10x8", "axbxc", "10x8x-1", "10x8x0.01", "10x8x12x4"):
        with pytest.raises(ValueError, match="dimensions"):
            parse_dimensions_mm(bad)


def test_warehouses() -> None:
    text = "code,name,country,region\nLDN-1,London,gb,LDN\nPAR-1,Paris,FR,\n"
    assert parse_warehouses(text) == [
        WarehouseImport(2, "LDN-1", "London", "GB", "LDN"),
        WarehouseImport(3, "PAR-1", "Paris", "FR", None),
    ]
    assert parse_warehouses("code,name,country\nX,X,US\n") == [WarehouseImport(2, "X", "X", "US", None)]
    assert _problems(parse_warehouses, "code,name,country,region\nLDN 1,London,England,\nLDN 1,,GB,\n") == [
        "row 2: code: 'LDN 1' is not a valid warehouse code (letters, digits, '.', '_', '-'; at most 32)",
        "row 2: country: must be an ISO 3166-1 alpha-2 code like 'GB', got 'England'",
        "row 3: code: 'LDN 1' is not a valid warehouse code (letters, digits, '.', '_', '-'; at most 32)",
        "row 3: name: is empty",
    ]


def test_warehouses_run_by_a_3pl() -> None:
    text = "code,name,country,region,kind,provider\nLDN-1,London,GB,,,\nSB-RENO,ShipBob Reno,US,NV,3PL,ShipBob\n"
    assert parse_warehouses(text) == [
        WarehouseImport(2, "LDN-1", "London", "GB", None),
        WarehouseImport(3, "SB-RENO", "ShipBob Reno", "US", "NV", WarehouseKind.THREEPL, "shipbob"),
    ]
    bad = (
        "code,name,country,kind,provider\n"
        "A,A,US,3pl,\n"  # a 3PL warehouse names its 3PL
        "B,B,US,own,shipbob\n"  # our own has none
        "C,C,US,3pl,acme-logistics\n"  # not a 3PL this engine speaks to
        "D,D,US,outsourced,\n"
    )
    assert _problems(parse_warehouses, bad) == [
        "row 2: provider: a 3pl warehouse names its 3PL (shipbob)",
        "row 3: provider: 'shipbob' is for a 3pl warehouse; this one is own",
        "row 4: provider: unknown 3PL 'acme-logistics' (known: shipbob)",
        "row 5: kind: must be own or 3pl, got 'outsourced'",
    ]


def test_stock() -> None:
    text = "warehouse,sku,on_hand\nLDN-1,MUG-RED,20\nNYC-1,MUG-RED,0\n"
    assert parse_stock(text) == [StockImport(2, "MUG-RED", "LDN-1", 20), StockImport(3, "MUG-RED", "NYC-1", 0)]
    bad = "sku,warehouse,on_hand\nMUG-RED,LDN-1,-1\nMUG-RED,,2.5\nMUG-RED,LDN-1,3\n"
    assert _problems(parse_stock, bad) == [
        "row 2: on_hand: must not be negative, got '-1'",
        "row 3: warehouse: is empty",
        "row 3: on_hand: must be a whole number of units, got '2.5'",
        "row 4: MUG-RED at LDN-1 already on row 2",
    ]


def test_read_text(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes("\ufeffsku\n".encode())
    assert read_text(path) == "sku\n"
    with pytest.raises(ValueError, match="no such file"):
        read_text(tmp_path / "missing.csv")
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_text(path)
