"""Time arithmetic on values read from objects: a stamp from an annotation or an object's
metadata, shifted by a duration from a knob or a document. It never raises: an instant past the
range a datetime holds (`9999-12-31T23:59:59Z` plus a day) reads as "never" or "long ago", and
the caller says which of the two is the cautious side for its decision.

Every sum or difference of a datetime and a duration in `rainbowd/` goes through `later` or
`earlier`, except where the operands are the clock and a constant (or a bounded setting), which
cannot leave the range. Those places, each `module: function`, are (tests/unit/test_instants.py
walks `rainbowd/` and keeps this list exact):

- rainbowd.core.planner.cycle: Cycle.__init__ (the cycle's stamp, rounded up a second)
- rainbowd.daemon.cycles: seed_history (the clock minus the history's window)
- rainbowd.deploy.rollback: _hold_for_rollback (the clock plus the rollout's timeout and a margin)
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta


class Beyond(enum.Enum):
    """What an instant past the representable range means to the caller."""

    NEVER = "never"
    """The end of time: a deadline or a hold that is never reached."""
    LONG_AGO = "long ago"
    """The start of time: a record so old it has long stopped counting."""


END = datetime.max.replace(tzinfo=UTC)
"""The last instant a datetime holds: "never" as a deadline."""
DAWN = datetime.min.replace(tzinfo=UTC)
"""The first instant a datetime holds: "long ago"."""


def later(at: datetime, delta: timedelta | float, *, beyond: Beyond) -> datetime:
    """`at + delta` (a float: seconds); out of range, END for NEVER and DAWN for LONG_AGO."""
    try:
        return at + _duration(delta)
    except OverflowError:
        return _beyond(beyond)


def earlier(at: datetime, delta: timedelta | float, *, beyond: Beyond) -> datetime:
    """`at - delta` (a float: seconds); out of range, END for NEVER and DAWN for LONG_AGO."""
    try:
        return at - _duration(delta)
    except OverflowError:
        return _beyond(beyond)


def _duration(delta: timedelta | float) -> timedelta:
    # A float too large for a timedelta raises OverflowError here, inside the guard; NaN raises
    # ValueError, turned into the same answer.
    if isinstance(delta, timedelta):
        return delta
    if delta != delta:
        raise OverflowError("NaN seconds")
    return timedelta(seconds=delta)


def _beyond(beyond: Beyond) -> datetime:
    return END if beyond is Beyond.NEVER else DAWN
