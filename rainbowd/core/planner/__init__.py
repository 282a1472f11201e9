"""The planner: `plan(snapshot, policy, now) -> Plan`, the burn-down decisions of one cycle.

Purely computational: a snapshot and a policy in, a plan out, no I/O and no clock. The executor
applies the plan; the reporting module renders it. docs/design.md "What the planner decides" is
the spec, and "Adding a rule" walks through changing one. For each app, in order:

- `assess`: each color's state (drained or not), what it was found on and the stamps it needs;
  the guards (protect, a hold, scaleUpGrace).
- `rules`: the cleanup rules, one function each returning a `Ruling` of typed decisions (drained,
  maxRetiredAge, maxColors, keepScaledDown, the delete of a color scaled down only to record a
  disruption) with the instant time alone would change them.
- `resolve`: the rules in order, applying their decisions, then what overrides them: the
  disruption budget, the records it keeps, paused.
- `actions`: the colors' plans and actions.

Every decision that compares a time is a `Ruling` read through `Thresholds.take` (cycle.py),
which folds its threshold into the app's `valid_until`. Decisions carry figures, not words
(rainbowd/core/notes.py); the reporting module renders them when they are read.

`planning.plan_app` runs the steps and returns the app's plan with its `valid_until`;
`Planner` (memo.py) makes the same decisions in a loop, reusing an app's plan until then while
its inputs hold.
"""

from rainbowd.core.planner.memo import Planner
from rainbowd.core.planner.planning import plan

__all__ = ["Planner", "plan"]
