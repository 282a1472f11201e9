"""The daemon's heap keeper: long-lived objects frozen out of the collector's walks, reference
cycles still collected at the next period, full collections started less often meanwhile."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from rainbowd.daemon.heap import FULL_AFTER, HeapKeeper


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_objects_are_frozen_at_most_once_a_period_and_cycles_still_collected() -> None:
    keeper = HeapKeeper(first=3600.0)
    looped = Node()
    looped.other = Node()
    looped.other.other = looped
    gone = weakref.ref(looped)
    keeper.tend()
    assert gc.get_freeze_count() > 0
    assert gone() is not None
    # Dropped while frozen: a reference cycle waits for the next period.
    del looped
    keeper.tend()  # within the period: nothing done
    assert gone() is not None
    keeper._next = 0.0  # the period is over
    keeper.tend()
    assert gone() is None
    # Frozen objects without a cycle are freed by reference counting at once.
    plain = Node()
    freed = weakref.ref(plain)
    keeper._next = 0.0
    keeper.tend()
    del plain
    assert freed() is None


def test_once_the_heap_is_kept_full_collections_start_ten_times_less_often() -> None:
    young, middle, full = gc.get_threshold()
    assert full < FULL_AFTER
    HeapKeeper().tend()
    assert gc.get_threshold() == (young, middle, FULL_AFTER)


def test_the_period_doubles_up_to_its_cap() -> None:
    keeper = HeapKeeper(first=30.0, period=100.0)
    waits = []
    for _ in range(4):
        keeper._next = 0.0
        keeper.tend()
        waits.append(keeper._wait)
    assert waits == [60.0, 100.0, 100.0, 100.0]
