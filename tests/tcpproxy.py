"""A loopback TCP proxy in front of the apiserver that tests cut (every connection at once, or
in the middle of the next chunk the server sends) or hold (the watches' events, the clients'
requests). TLS passes through untouched; the serving certificate names 127.0.0.1, so clients
verify it as usual."""

from __future__ import annotations

import asyncio


class TcpProxy:
    """Forwards loopback TCP connections to the apiserver until told to cut them."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.blocked = False
        self.cut_next = False
        self.cuts = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._requests = asyncio.Event()
        self._requests.set()
        self._held: set[asyncio.StreamWriter] = set()
        self._let_go = asyncio.Event()  # set when a connection leaves `_held` or all flow again
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut_mid_chunk(self) -> None:
        """Forward only the first half of the next chunk the server sends on any connection,
        then cut that connection alone: one stream broken in the middle of an event."""
        self.cut_next = True

    def pause_downstream(self) -> None:
        """Hold what the server sends on the connections open now (the watches' events) until
        `resume_downstream`; new connections work: a client's picture goes stale while its
        requests still go through.

        The end of a held connection (the server closing it, say on a restart) is held too:
        the client sees its watch end when it sees the events before it.

        A held connection the client sends a new request on is an idle keep-alive connection
        put back to work, not a watch (a watch's client sends nothing after its request): it
        is let go, or the answer to a request made after the pause would be held too."""
        self._held = set(self._writers)
        self._flowing.clear()

    def resume_downstream(self) -> None:
        self._flowing.set()
        self._let_go.set()

    def hold_requests(self) -> None:
        """Hold what clients send, on every connection (new ones included), until
        `release_requests`: what the test does meanwhile reaches the server first."""
        self._requests.clear()

    def release_requests(self) -> None:
        self._requests.set()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones (closed as soon as accepted)."""
        self.blocked = True
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def resume(self) -> None:
        self.blocked = False

    async def close(self) -> None:
        self.resume_downstream()
        self._requests.set()
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, client=writer)),
            asyncio.create_task(self._pump(up_reader, writer, downstream=True)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.difference_update(pumps)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        downstream: bool = False,
        client: asyncio.StreamWriter | None = None,
    ) -> None:
        """Forwards one direction; `client` (upstream only) is the connection's client side."""
        try:
            while data := await reader.read(65536):
                if client is not None:
                    await self._requests.wait()
                    if client in self._held:  # a request: no watch, whatever came before
                        self._held.discard(client)
                        self._let_go.set()
                if downstream and writer in self._held:
                    await self._flowing.wait()
                if downstream and self.cut_next:
                    self.cut_next = False
                    self.cuts += 1
                    writer.write(data[: max(1, len(data) // 2)])
                    await writer.drain()
                    return
                writer.write(data)
                await writer.drain()
            while downstream and writer in self._held and not self._flowing.is_set():
                self._let_go.clear()
                await self._let_go.wait()
        finally:
            writer.transport.abort()
