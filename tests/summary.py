"""What a run prints once at its end, whichever process ran the tests: the fault suite's ledger,
the real node's figures and the sandbox start times. Each pytest-xdist worker sends its part to
the controller (`workeroutput`), which prints them merged; without xdist the one process has all.
"""

from __future__ import annotations

import json
from typing import Any

KEY = "rainbowd_summary"

parts: dict[str, Any] = {}
"""This process's part: JSON-able values by name, set by the conftest that owns each."""

gathered: list[dict[str, Any]] = []
"""Every worker's part, on the xdist controller."""


def dump() -> str:
    return json.dumps(parts)


def gather(text: str) -> None:
    gathered.append(json.loads(text))


def every(name: str) -> list[Any]:
    """The part `name` of this process and of every worker that had one."""
    return [p[name] for p in (parts, *gathered) if name in p]
