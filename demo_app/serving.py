"""The color servers: an HTTP page in the color (plus /healthz, /metrics and a /ws websocket
stream) and a raw TCP stream printing the color, with a gauge of the connections they hold open.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PHASE_ANNOTATION = "rainbowd.io/phase"


def log(msg: str, **fields: Any) -> None:
    """One JSON object per line on stderr: a fixed message plus key/value fields."""
    print(json.dumps({"msg": msg, **fields}, default=str), file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Config:
    app: str
    color: str  # six hex digits, no '#'
    namespace: str = "default"
    host: str = "0.0.0.0"
    http_port: int = 8080
    tcp_port: int = 8081
    interval: float = 5.0
    """Seconds between two color lines on a stream."""
    annotations_file: Path = Path("/etc/podinfo/annotations")
    """The pod's annotations as the downward API writes them; absent outside Kubernetes."""

    @property
    def line(self) -> str:
        return f"The color is #{self.color}\n"


def read_annotations(path: Path) -> dict[str, str]:
    """Parses the downward API's `key="value"` lines; a missing or unreadable file is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        raw = raw.strip()
        value = raw
        if raw.startswith('"'):
            # The kubelet quotes values Go-style; JSON reads every escape it uses for
            # printable text, and a value it cannot read is kept with its quotes stripped.
            try:
                value = str(json.loads(raw))
            except ValueError:
                value = raw.strip('"')
        out[key.strip()] = value
    return out


class _ConnectionsCollector(Collector):
    """Builds the gauge fresh on every scrape from the live count: nothing can go stale."""

    def __init__(self, server: ColorServer) -> None:
        self._server = server

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cfg = self._server.config
        family = GaugeMetricFamily(
            "rainbow_open_connections",
            "Open long-lived connections (TCP color streams and websockets) held by this pod.",
            labels=["namespace", "app", "color"],
        )
        family.add_metric([cfg.namespace, cfg.app, cfg.color], self._server.open_connections)
        yield family


class ColorServer:
    """Both listeners and the connections they hold; `start()` then `stop()`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._streams: set[asyncio.Task[Any]] = set()
        self._websockets: set[web.WebSocketResponse] = set()
        self._tcp_server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self.http_port = 0
        self.tcp_port = 0
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_ConnectionsCollector(self))

    @property
    def open_connections(self) -> int:
        return len(self._streams) + len(self._websockets)

    @property
    def retired(self) -> bool:
        return read_annotations(self.config.annotations_file).get(PHASE_ANNOTATION) == "retired"

    # --- lifecycle

    async def start(self) -> None:
        cfg = self.config
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/ws", self._websocket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.http_port)
        await site.start()
        self.http_port = _port(self._runner.addresses)
        self._tcp_server = await asyncio.start_server(self._stream, cfg.host, cfg.tcp_port)
        self.tcp_port = _port([s.getsockname() for s in self._tcp_server.sockets])
        log(
            "demo app listening",
            namespace=cfg.namespace,
            app=cfg.app,
            color=cfg.color,
            host=cfg.host,
            http_port=self.http_port,
            tcp_port=self.tcp_port,
        )

    async def stop(self) -> None:
        """Stops accepting, closes every open connection, then the HTTP server."""
        if self._tcp_server is not None:
            self._tcp_server.close()
        for ws in list(self._websockets):
            await ws.close(code=1001, message=b"server shutting down")
        for task in list(self._streams):
            task.cancel()
        if self._streams:
            await asyncio.wait(list(self._streams), timeout=2.0)
        if self._tcp_server is not None:
            await self._tcp_server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()
        log("demo app stopped", color=self.config.color)

    # --- HTTP

    async def _page(self, request: web.Request) -> web.Response:
        cfg = self.config
        retired = self.retired
        status = (
            "This color is retired: new connections go to a newer color."
            if retired
            else "This color is serving."
        )
        body = _PAGE.format(
            color=cfg.color,
            app=html.escape(cfg.app),
            namespace=html.escape(cfg.namespace),
            host=html.escape(socket.gethostname()),
            phase="retired" if retired else "serving",
            status=status,
        )
        return web.Response(text=body, content_type="text/html")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._websockets.add(ws)
        reader = asyncio.ensure_future(_drain_websocket(ws))
        try:
            while not ws.closed:
                await ws.send_str(self.config.line)
                done, _ = await asyncio.wait({reader}, timeout=self.config.interval)
                if done:
                    break
        except ConnectionError:
            pass
        finally:
            self._websockets.discard(ws)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return ws

    # --- TCP

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        closed_by_client = asyncio.ensure_future(_drain_stream(reader))
        line = self.config.line.encode()
        try:
            while True:
                writer.write(line)
                await writer.drain()
                done, _ = await asyncio.wait({closed_by_client}, timeout=self.config.interval)
                if done:
                    break
        except ConnectionError:
            pass  # the client went away mid-write: the same as hanging up
        finally:
            self._streams.discard(task)
            closed_by_client.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


async def _drain_stream(reader: asyncio.StreamReader) -> None:
    # What a client sends is ignored; the read only tells when it hangs up.
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass


async def _drain_websocket(ws: web.WebSocketResponse) -> None:
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break


def _port(addresses: list[Any]) -> int:
    return int(addresses[0][1])


_PAGE = """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>{app}: #{color}</title>
<style>
  body {{ background: #{color}; color: #fff; font: 2em sans-serif; text-align: center;
         padding-top: 20vh; text-shadow: 0 0 4px #000; }}
</style>
</head>
<body data-phase="{phase}">
<h1>The color is #{color}</h1>
<p>{status}</p>
<p><small>app {app}, namespace {namespace}, pod {host}</small></p>
</body>
</html>
"""
