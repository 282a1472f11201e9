"""The daemon's short memory of what it did: the latest applied actions, bounded, newest last,
served on /status as `recentActions` for the page's timeline. In memory only; the lasting record
is each action's Event and log line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rainbowd.core.objects import format_time
from rainbowd.kube.executing import ActionOutcome, ActionResult

RECENT_ACTIONS = 50
"""Actions kept: a color makes a handful in its whole life, so 50 spans many releases, and
/status stays small."""


class Timeline:
    def __init__(self, size: int = RECENT_ACTIONS) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)

    def record(self, at: datetime, results: Iterable[ActionResult]) -> None:
        """One cycle's results. Skipped ones (dry run, paused, stopping) did nothing: the plan
        shows them as planned, the timeline only what was attempted."""
        for result in results:
            if result.outcome is ActionOutcome.SKIPPED:
                continue
            action = result.action
            self._entries.append(
                {
                    "at": format_time(at),
                    "namespace": action.namespace,
                    "app": action.app,
                    "color": action.color,
                    "deployment": action.name,
                    "kind": str(action.kind),
                    "reason": str(action.reason),
                    "message": action.message,
                    "connections": action.connections,
                    "outcome": str(result.outcome),
                    "error": result.error,
                    # A delete that left its color's HPA, PDB or ScaledObject behind.
                    **({"leftBehind": list(result.left_behind)} if result.left_behind else {}),
                }
            )

    def document(self) -> list[dict[str, Any]]:
        return list(self._entries)
