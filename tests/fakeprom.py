"""A fake Prometheus query API: a real aiohttp server on loopback whose answers each test scripts.

Only for faults the real server cannot produce on demand (NaN, a hang, a 503 body, non-JSON...);
`FaultyProxy` passes the real server's answers through and spoils only the queries it is told to.
It records every request so tests can check what rainbowd sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
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
        app.router.add_route("*", "/api/v1/query_range", self._handle)
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


FAULTS = ("slow", "http500", "http503", "status-error", "nan", "inf", "warnings")


class FaultyProxy:
    """A real HTTP server on loopback in front of the real Prometheus: queries pass through,
    except those containing a key of `faults`, which get that fault instead:

    - `slow`: no answer until the proxy stops (past any client timeout);
    - `http500`, `http503`: that status (503 with a Prometheus error body, 500 with a plain one);
    - `status-error`: a 200 carrying `status: error`;
    - `nan`, `inf`: the real answer with every sample's value replaced by NaN or +Inf (each
      of a matrix' samples too);
    - `warnings`: the real answer with a partial-data warning added.

    And a query whose real answer holds a series of a namespace in `unavailable_namespaces`
    gets a 503, as from a sharded backend (Thanos, Mimir) whose store holding that namespace's
    data is down: a query that touches only other namespaces is answered. `queries` records
    every query text that came through.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: dict[str, str] = {}
        self.faulted: dict[str, int] = {}
        self.unavailable_namespaces: set[str] = set()
        self.queries: list[str] = []
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        query = form.get("query") or request.query.get("query", "")
        self.queries.append(query)
        fault = next((f for key, f in self.faults.items() if key in query), None)
        if fault is not None:
            self.faulted[fault] = self.faulted.get(fault, 0) + 1
        if fault == "slow":
            # Stuck until the faults clear (the client gives up long before).
            await self._release.wait()
            return web.Response(status=503, text="stuck until now")
        if fault == "http500":
            return web.Response(status=500, text="internal server error")
        if fault == "http503":
            body = {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"}
            return web.json_response(body, status=503)
        if fault == "status-error":
            body = {"status": "error", "errorType": "execution", "error": "out of memory"}
            return web.json_response(body)
        assert self._session is not None
        async with self._session.post(self.upstream + request.path, data=form) as resp:
            status, doc = resp.status, await resp.json()
        if fault in ("nan", "inf") and doc.get("status") == "success":
            value = "NaN" if fault == "nan" else "+Inf"
            for item in doc["data"]["result"]:
                # An instant vector's sample, or every sample of a matrix (a range selection).
                for pair in item["values"] if "values" in item else [item["value"]]:
                    pair[1] = value
        if fault == "warnings":
            doc["warnings"] = ["remote read store-b: connection refused"]
        touched = self._unavailable_in(doc)
        if touched:
            self.faulted["unavailable-namespace"] = self.faulted.get("unavailable-namespace", 0) + 1
            body = {
                "status": "error",
                "errorType": "unavailable",
                "error": f"store holding namespace {touched} unavailable",
            }
            return web.json_response(body, status=503)
        return web.json_response(doc, status=status)

    def _unavailable_in(self, doc: dict[str, Any]) -> str | None:
        """The first namespace of `unavailable_namespaces` the answer holds a series of."""
        if not self.unavailable_namespaces or doc.get("status") != "success":
            return None
        held = {item.get("metric", {}).get("namespace") for item in doc["data"]["result"]}
        return min(held & self.unavailable_namespaces, default=None)

    async def start(self) -> str:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/api/v1/query", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def clear(self) -> None:
        """Every query passes through from now on; stuck ones are let go."""
        self.faults.clear()
        self.unavailable_namespaces.clear()
        self._release.set()

    async def stop(self) -> None:
        self.clear()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@contextlib.asynccontextmanager
async def running_proxy(upstream: str) -> AsyncIterator[FaultyProxy]:
    """A FaultyProxy in front of `upstream`, started, and stopped on exit."""
    proxy = FaultyProxy(upstream)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
