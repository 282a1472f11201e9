"""A fake Prometheus query API: a real aiohttp server on loopback whose answers each test scripts.

Only for faults the real server cannot produce on demand (NaN, a hang, a 503 body, non-JSON...).
It records every request so tests can check what rainbowd sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] = field(default_factory=dict)
    hang: bool = False
    """Never answer (until the server stops): a Prometheus that is stuck."""


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    content_type: str
    query_string: dict[str, str]
    form: dict[str, str]


def vector(
    *series: tuple[dict[str, str], str], warnings: list[str] | None = None
) -> dict[str, Any]:
    """A success envelope holding an instant vector of (labels, value-string) pairs."""
    doc: dict[str, Any] = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [1700000000.0, v]} for m, v in series],
        },
    }
    if warnings:
        doc["warnings"] = warnings
    return doc


class FakePrometheus:
    def __init__(self) -> None:
        self.reply = Reply(body=vector())
        self.requests: list[Recorded] = []
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                content_type=request.content_type,
                query_string=dict(request.query),
                form=form,
            )
        )
        reply = self.reply
        if reply.hang:
            await self._release.wait()
        body = reply.body
        if isinstance(body, dict):
            return web.json_response(body, status=reply.status)
        return web.Response(body=body, status=reply.status, content_type="text/plain")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/api/v1/query", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def fakeprom() -> AsyncIterator[FakePrometheus]:
    fake = FakePrometheus()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
