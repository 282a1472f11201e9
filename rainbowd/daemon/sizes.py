"""The sizes of the daemon's long-lived structures, on /metrics: what a months-long run would see
grow (caches, memos, history, forecasts, timelines), found by walking the daemon's parts rather
than listed by hand, so a structure added later is measured without anyone remembering to.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

DEPTH = 5
"""How far below a root the walk follows rainbowd's own objects (daemon -> parts -> reconciler
-> pipeline -> history reaches every structure today)."""

COMPONENTS = 8
"""A container of at most this many of rainbowd's objects holds parts to walk into."""

Sized = dict[Any, Any] | list[Any] | set[Any] | frozenset[Any] | deque[Any]
_SIZED = (dict, list, set, frozenset, deque)


def _ours(value: object) -> bool:
    module = type(value).__module__
    return module == "rainbowd" or module.startswith("rainbowd.")


def structure_sizes(root: object, *, depth: int = DEPTH) -> dict[str, int]:
    """Entries of every dict, list, set and deque reachable from `root` through the attributes
    of rainbowd's own objects (each object once), by attribute path. A container whose values
    are lists, sets or deques also gets `path[*]`: the sum of their sizes (e.g. every color's
    samples); dicts as values are records, not collections."""
    out: dict[str, int] = {}
    seen: set[int] = set()

    def walk(obj: object, path: str, left: int) -> None:
        if id(obj) in seen or left < 0:
            return
        seen.add(id(obj))
        for name, value in _attributes(obj):
            where = f"{path}.{name}" if path else name
            if isinstance(value, _SIZED):
                out[where] = len(value)
                inner = _inner_total(value)
                if inner is not None:
                    out[f"{where}[*]"] = inner
                for i, item in enumerate(_components(value)):
                    walk(item, f"{where}[{i}]", left - 1)
            elif _ours(value):
                walk(value, where, left - 1)

    walk(root, "", depth)
    return out


def _attributes(obj: object) -> Iterator[tuple[str, object]]:
    names = dict(getattr(obj, "__dict__", {}))
    for slot in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, slot):
            names[slot] = getattr(obj, slot)
    for name, value in sorted(names.items()):
        yield name.lstrip("_") or name, value


def _components(container: Sized) -> list[object]:
    """The parts held in a small container (a list of informers, a reader per query); a large
    one holds data (Deployments, samples), whose attributes are no structures of the daemon."""
    if len(container) > COMPONENTS:
        return []
    values = container.values() if isinstance(container, dict) else container
    return [v for v in values if _ours(v) and not _is_model(v)]


def _is_model(value: object) -> bool:
    return type(value).__module__.startswith("rainbowd.core.")


def _inner_total(container: Sized) -> int | None:
    values = container.values() if isinstance(container, dict) else container
    total, nested = 0, False
    for value in values:
        if isinstance(value, _SIZED) and not isinstance(value, dict):
            total += len(value)
            nested = True
    return total if nested else None


class StructureCollector(Collector):
    """`rainbowd_structure_entries{structure}` from `structure_sizes(root())`, and the process's
    asyncio tasks, read at each scrape (a few thousand attribute reads)."""

    def __init__(self, root: Callable[[], object]) -> None:
        self.root = root

    def collect(self) -> Iterator[Metric]:
        entries = GaugeMetricFamily(
            "rainbowd_structure_entries",
            "Entries of a long-lived structure of the daemon, by attribute path; for finding "
            "growth over weeks, the paths are internal and may change between releases.",
            labels=("structure",),
        )
        for path, size in sorted(structure_sizes(self.root()).items()):
            entries.add_metric([path], float(size))
        tasks = GaugeMetricFamily("rainbowd_asyncio_tasks", "asyncio tasks not yet done.")
        tasks.add_metric([], float(_tasks()))
        yield from (entries, tasks)


def _tasks() -> int:
    try:
        return sum(1 for t in asyncio.all_tasks() if not t.done())
    except RuntimeError:  # scraped outside the loop
        return 0
