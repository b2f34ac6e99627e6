"""Warehouse choice and split plans (pure functions)."""

from __future__ import annotations

from common.inventory.allocation import Site, choose_warehouse, locality, plan_split

SITES = [
    Site("LDN-1", "GB", "LDN"),
    Site("MAN-1", "GB", "MAN"),
    Site("NYC-1", "US", "NY"),
    Site("PAR-1", "FR", None),
]


def test_locality() -> None:
    ldn = SITES[0]
    assert locality(ldn, "GB", "LDN") == 0
    assert locality(ldn, "gb", " ldn ") == 0  # case and spaces do not matter
    assert locality(ldn, "GB", "MAN") == 1
    assert locality(ldn, "US", "LDN") == 2  # the region name alone, in another country, is no match
    assert locality(ldn, None, "LDN") == 0
    assert locality(ldn, None, None) == 2
    assert locality(SITES[3], "FR", "IDF") == 1


def test_choose_prefers_region_then_country_then_most_available_then_code() -> None:
    stock = {code: {"MUG": 10} for code in ("LDN-1", "MAN-1", "NYC-1", "PAR-1")}
    stock["NYC-1"]["MUG"] = 50
    items = [("MUG", 2)]
    assert choose_warehouse(SITES, stock, items) == "NYC-1"  # no preference: most available
    assert choose_warehouse(SITES, stock, items, "GB", "MAN") == "MAN-1"
    assert choose_warehouse(SITES, stock, items, "GB", "LDN") == "LDN-1"
    assert choose_warehouse(SITES, stock, items, "GB", "Cardiff") == "LDN-1"  # country; tie on stock -> code
    stock["MAN-1"]["MUG"] = 11
    assert choose_warehouse(SITES, stock, items, "GB", None) == "MAN-1"  # country; more available
    assert choose_warehouse(SITES, stock, items, "DE", None) == "NYC-1"


def test_choose_only_warehouses_that_cover_the_whole_order() -> None:
    stock = {"LDN-1": {"MUG": 5, "TEE": 0}, "NYC-1": {"MUG": 5, "TEE": 5}}
    assert choose_warehouse(SITES, stock, [("MUG", 2), ("TEE", 1)], "GB", "LDN") == "NYC-1"
    assert choose_warehouse(SITES, stock, [("MUG", 6)], "GB", "LDN") is None


def test_split_plan_single_warehouse_when_one_covers() -> None:
    stock = {"LDN-1": {"MUG": 5}, "NYC-1": {"MUG": 9}}
    assert plan_split(SITES, stock, [("MUG", 3)], "GB", "LDN") == [("LDN-1", [("MUG", 3)])]
    assert plan_split(SITES, stock, [("MUG", 3)]) == [("NYC-1", [("MUG", 3)])]


def test_split_plan_uses_fewest_warehouses_preferring_the_region() -> None:
    stock = {
        "LDN-1": {"MUG": 2, "TEE": 0},
        "MAN-1": {"MUG": 0, "TEE": 3},
        "NYC-1": {"MUG": 5, "TEE": 5},
        "PAR-1": {"MUG": 1, "TEE": 1},
    }
    # Only NYC-1 covers both lines... alone: one warehouse beats any split, even far away.
    assert plan_split(SITES, stock, [("MUG", 2), ("TEE", 2)], "GB", "LDN") == [("NYC-1", [("MUG", 2), ("TEE", 2)])]
    stock["NYC-1"] = {"MUG": 5, "TEE": 0}
    # Two warehouses needed; {LDN-1, MAN-1} is in the ship-to region and country.
    assert plan_split(SITES, stock, [("MUG", 2), ("TEE", 2)], "GB", "LDN") == [
        ("LDN-1", [("MUG", 2)]),
        ("MAN-1", [("TEE", 2)]),
    ]
    # Shipping to the US: NYC-1 is local, and takes what it can first.
    assert plan_split(SITES, stock, [("MUG", 2), ("TEE", 2)], "US", "NY") == [
        ("NYC-1", [("MUG", 2)]),
        ("MAN-1", [("TEE", 2)]),
    ]


def test_split_plan_can_split_one_line() -> None:
    stock = {"LDN-1": {"MUG": 4}, "MAN-1": {"MUG": 3}, "NYC-1": {"MUG": 6}, "PAR-1": {"MUG": 0}}
    # 9 mugs: no warehouse alone; two do (NYC-1 + LDN-1 or NYC-1 + MAN-1); shipping to LDN prefers LDN-1.
    assert plan_split(SITES, stock, [("MUG", 9)], "GB", "LDN") == [("LDN-1", [("MUG", 4)]), ("NYC-1", [("MUG", 5)])]
    # 13 mugs need all three stocked warehouses.
    plan = plan_split(SITES, stock, [("MUG", 13)], "GB", "MAN")
    assert plan == [("MAN-1", [("MUG", 3)]), ("LDN-1", [("MUG", 4)]), ("NYC-1", [("MUG", 6)])]


def test_split_plan_empty_when_all_warehouses_together_fall_short() -> None:
    stock = {"LDN-1": {"MUG": 4}, "NYC-1": {"MUG": 3}}
    assert plan_split(SITES, stock, [("MUG", 8)]) == []
    assert plan_split(SITES, stock, [("MUG", 1), ("TEE", 1)]) == []
    assert plan_split([], {}, [("MUG", 1)]) == []


def test_split_plan_many_warehouses_falls_back_to_greedy() -> None:
    sites = [Site(f"W{i:02d}", "GB", None) for i in range(40)]
    stock = {s.code: {"MUG": 1} for s in sites}
    plan = plan_split(sites, stock, [("MUG", 30)], "GB", None)
    assert len(plan) == 30
    assert sum(q for _, lines in plan for _, q in lines) == 30
