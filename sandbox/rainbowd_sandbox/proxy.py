"""The Service on loopback: two listening ports (HTTP and the TCP stream) that hand each new
connection to a serving pod the Service's selector picks, as kube-proxy would.

A connection stays with the pod that accepted it: switching the selector changes where new
connections go, and a connection ends when either its client or its pod goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Mapping, Sequence

from rainbowd.logs import get_logger
from rainbowd_sandbox.pods import DemoPod

log = get_logger(__name__)

_CHUNK = 64 * 1024
ENDPOINT_WAIT = 10.0
"""Seconds a new connection waits for a serving pod before it is closed."""


class ServiceProxy:
    """Listens on 127.0.0.1 (`http_port`, `tcp_port`; 0 picks free ports) until `close()`.

    `selector()` returns the Service's selector now; `endpoints(selector)` the serving pods.
    """

    def __init__(
        self,
        *,
        selector: Callable[[], Mapping[str, str]],
        endpoints: Callable[[Mapping[str, str]], Sequence[DemoPod]],
        http_port: int = 0,
        tcp_port: int = 0,
    ) -> None:
        self._selector = selector
        self._endpoints = endpoints
        self.http_port = http_port
        self.tcp_port = tcp_port
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._turn = itertools.count()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1 {self.tcp_port}"

    async def start(self) -> None:
        http = await asyncio.start_server(
            lambda r, w: self._accept(r, w, "http"), "127.0.0.1", self.http_port
        )
        tcp = await asyncio.start_server(
            lambda r, w: self._accept(r, w, "tcp"), "127.0.0.1", self.tcp_port
        )
        self._servers = [http, tcp]
        self.http_port = int(http.sockets[0].getsockname()[1])
        self.tcp_port = int(tcp.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: str
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._forward(reader, writer, kind)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: str
    ) -> None:
        pods = await self._wait_endpoints()
        if not pods:
            log.warning("no serving pod for the service", selector=dict(self._selector()))
            return
        pod = pods[next(self._turn) % len(pods)]
        port = pod.http_port if kind == "http" else pod.tcp_port
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            log.warning("pod refused the connection", pod=pod.name, error=str(exc))
            return
        if kind == "tcp":
            log.info("connection opened", pod=pod.name, color=pod.color)
        try:
            # Whichever side hangs up first ends the connection, as a TCP proxy would.
            pumps = [
                asyncio.ensure_future(_pump(reader, upstream_writer)),
                asyncio.ensure_future(_pump(upstream_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            upstream_writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await upstream_writer.wait_closed()
            if kind == "tcp":
                log.info("connection closed", pod=pod.name, color=pod.color)

    async def _wait_endpoints(self) -> Sequence[DemoPod]:
        # A color just made live may still be starting its processes: hold the new connection
        # a moment, as a client's connect timeout would, rather than refuse it.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ENDPOINT_WAIT
        while True:
            selector = self._selector()
            # An empty selector selects nothing, as for a Kubernetes Service.
            pods = self._endpoints(selector) if selector else []
            if pods or loop.time() > deadline:
                return pods
            await asyncio.sleep(0.1)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
