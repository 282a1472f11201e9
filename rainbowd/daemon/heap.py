"""Keeps Python's cycle collector off the daemon's long-lived objects.

At 10,000 Deployments the daemon holds about 200,000 container objects that live for hours (the
watch caches, the plans reused cycle after cycle, the connection history). A cycle in which every
color's connections moved makes tens of thousands of new objects that outlive a young collection,
and that is enough to start a full collection, which walks all 200,000 of them: about a hundred
milliseconds, every such cycle, for objects that are freed by reference counting anyway (none of
them forms a reference cycle).

`HeapKeeper.tend()` after a cycle, at most once per period: one full collection, then
`gc.freeze()`, which moves every surviving object to the permanent generation the collector does
not walk. Frozen objects are still freed by reference counting when dropped; only a reference
cycle among them would wait, and each period starts with `gc.unfreeze()` so the next full
collection sees everything again and nothing is kept for longer than a period. The period starts
short and doubles up to `PERIOD`: the first minutes after a start, when the caches fill and
every Deployment gets its stamp, replace most of what the first freeze held.

Freezing also takes the long-lived objects out of what CPython weighs a full collection
against: it starts one only once the objects that survived into the oldest generation since
the last are a quarter of those it holds, and with most of them frozen that quarter is a few
thousand objects, reached once or twice in every cycle where every color's connections moved
(each such collection walks all the objects made since the freeze: 30-40 ms a cycle at 10,000
Deployments, in tests/bench/profile_cycle.py). So once it keeps the heap, the collector starts
a full collection on its own only after `FULL_AFTER` collections of the middle generation
instead of CPython's 10: ten times less often, besides the one made here each period.
"""

from __future__ import annotations

import gc
import time

from rainbowd.logs import get_logger

log = get_logger(__name__)

PERIOD = 600.0
"""Seconds between two full collections made here, once past the first minutes."""
FIRST_PERIOD = 30.0
FULL_AFTER = 100
"""Collections of the middle generation before the collector starts a full one on its own."""


class HeapKeeper:
    def __init__(self, first: float = FIRST_PERIOD, period: float = PERIOD) -> None:
        self.period = period
        self._wait = first
        self._next = 0.0  # monotonic time of the next full collection; 0: at the first cycle

    def tend(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._wait
        self._wait = min(self._wait * 2, self.period)
        began = time.process_time()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_AFTER)
        log.debug(
            "heap frozen",
            collected=collected,
            frozen=gc.get_freeze_count(),
            cpu_ms=round((time.process_time() - began) * 1000, 1),
        )
