"""Each activities class lists every one of its activities in `activities()` (what the worker registers), once."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from temporalio import activity

from activities.inventory import InventoryActivities
from activities.notifications import NotificationActivities
from activities.returns import ReturnActivities
from activities.shipping import ShippingActivities
from activities.threepl import ThreePLActivities
from activities.threepl_inventory import ThreePLInventoryActivities
from activities.warehouse import WarehouseActivities
from common.config import Settings

NOTHING: Any = None  # the lists only bind methods: no client is called


class _NoStores:
    """A Store whose domain stores are all absent: constructors keep references, nothing is called."""

    def __getattr__(self, name: str) -> None:
        return None


STORE: Any = _NoStores()


def defined_activities(cls: type) -> set[str]:
    """The names of the class's methods decorated with @activity.defn."""
    return {
        name
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if activity._Definition.from_callable(member) is not None
    }


@pytest.mark.parametrize(
    "instance",
    [
        InventoryActivities(STORE, NOTHING, Settings()),
        WarehouseActivities(STORE),
        ShippingActivities(STORE, NOTHING),
        NotificationActivities(STORE, NOTHING, NOTHING, Settings()),
        ReturnActivities(STORE, NOTHING, NOTHING),
        ThreePLActivities(STORE, {}, NOTHING),
        ThreePLInventoryActivities(STORE, {}, Settings()),
    ],
    ids=lambda instance: type(instance).__name__,
)
def test_activities_lists_every_activity_once(instance: Any) -> None:
    listed = [fn.__name__ for fn in instance.activities()]
    assert len(listed) == len(set(listed))
    assert set(listed) == defined_activities(type(instance))
    assert all(fn.__self__ is instance for fn in instance.activities())
