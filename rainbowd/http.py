"""The daemon's HTTP server: /metrics, /healthz, /readyz, /status and the live page (`/`) on one
aiohttp app.

It only reads what the daemon exposes (`DaemonView`); started with web.AppRunner + TCPSite and
stopped in the reverse order (site, then runner), so probes keep answering until the very end.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from rainbowd.logs import get_logger
from rainbowd.web import add_routes as add_page_routes

log = get_logger(__name__)


class MetricsView(Protocol):
    @property
    def registry(self) -> CollectorRegistry: ...


class DaemonView(Protocol):
    """What the HTTP server reads from the daemon."""

    @property
    def metrics(self) -> MetricsView: ...

    @property
    def ready(self) -> bool: ...

    def healthy(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


class HttpServer:
    def __init__(self, daemon: DaemonView, *, host: str, port: int) -> None:
        self.daemon = daemon
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/status", self.status)
        add_page_routes(app)
        return app

    async def start(self) -> None:
        # Access logs off: probes hit these endpoints every few seconds.
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host or None, self.port)
        await site.start()
        # With port 0 the OS picked one; report the real one. Only then is it `listening`: a
        # reader of `url` meanwhile would be given port 0.
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break
        self._site = site
        log.info("http listening", host=self.host or "*", port=self.port)

    async def stop(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def listening(self) -> bool:
        return self._site is not None

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.daemon.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        if self.daemon.healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="reconcile loop stalled\n")

    async def readyz(self, request: web.Request) -> web.Response:
        if self.daemon.ready:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="caches not synced or no valid policy\n")

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.daemon.status(), dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, indent=2)
