"""Waiting for the first of several things: the daemon's one way to race a wait against a stop
or a deadline, so no caller cancels (or forgets to cancel) its helper tasks by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def first_done(*aws: Awaitable[Any], timeout: float | None = None) -> int | None:  # noqa: ASYNC109
    """Await until one of `aws` finishes or `timeout` seconds pass: the index of the first to
    finish (whatever its outcome), None on timeout. The others are cancelled and awaited before
    this returns; wrap a task in `asyncio.shield` to keep it running."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(
            tasks,
            timeout=None if timeout is None else max(0.0, timeout),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return next((i for i, task in enumerate(tasks) if task in done), None)
