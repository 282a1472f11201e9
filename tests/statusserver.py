"""rainbowd's own HTTP server on loopback, answering a fixed /status document: for the clients
of /status (`rainbowd status`, the page's routes) where no cluster is needed to say what they do
with a given document."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry

from rainbowd.http import HttpServer


class _Metrics:
    registry = CollectorRegistry()


class FixedStatus:
    """The part of the daemon the HTTP server reads, holding a document tests can change."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.metrics = _Metrics()
        self.ready = True

    def healthy(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return self.document


@contextlib.asynccontextmanager
async def serving(view: FixedStatus) -> AsyncIterator[HttpServer]:
    server = HttpServer(view, host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
