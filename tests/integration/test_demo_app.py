"""The demo color app as a real process: page, color stream, websocket, gauge, retired phase."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from demo_app.serving import read_annotations
from tests.demoapps import ROOT, DemoApp

T = TypeVar("T")
DEADLINE = 15.0


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoApp]:
    app = DemoApp("3c3fdc", workdir=tmp_path, namespace="chat")
    app.start()
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = time.monotonic() + DEADLINE
    last: T | None = None
    while True:
        last = await check()
        if last is not None:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {DEADLINE}s")
        await asyncio.sleep(0.05)


async def gauge(http: aiohttp.ClientSession, demo: DemoApp) -> dict[tuple[str, str, str], float]:
    async with http.get(f"{demo.http_url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "rainbow_open_connections":
            for s in family.samples:
                out[(s.labels["namespace"], s.labels["app"], s.labels["color"])] = s.value
    return out


async def wait_gauge(http: aiohttp.ClientSession, demo: DemoApp, expected: float) -> None:
    assert demo.namespace is not None and demo.app is not None, "an unlabelled demo has no gauge"
    key = (demo.namespace, demo.app, demo.color)

    async def check() -> bool | None:
        return True if (await gauge(http, demo)).get(key) == expected else None

    await eventually(check, f"gauge at {expected}")


async def test_page_shows_the_color(demo: DemoApp, http: aiohttp.ClientSession) -> None:
    async with http.get(demo.http_url + "/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "The color is #3c3fdc" in page
    assert "background: #3c3fdc" in page
    assert "retired" not in page
    async with http.get(demo.http_url + "/healthz") as resp:
        assert resp.status == 200


async def test_tcp_stream_prints_the_color_repeatedly(demo: DemoApp) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", demo.tcp_port)
    try:
        lines = [await asyncio.wait_for(reader.readline(), DEADLINE) for _ in range(3)]
    finally:
        writer.close()
        await writer.wait_closed()
    assert lines == [b"The color is #3c3fdc\n"] * 3


async def test_websocket_stream_prints_the_color(
    demo: DemoApp, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(demo.http_url + "/ws") as ws:
        first = await ws.receive_str(timeout=DEADLINE)
        second = await ws.receive_str(timeout=DEADLINE)
    assert first == second == "The color is #3c3fdc\n"


async def test_gauge_counts_open_connections_and_falls_when_they_close(
    demo: DemoApp, http: aiohttp.ClientSession
) -> None:
    assert await gauge(http, demo) == {("chat", "rainbow-deploys", "3c3fdc"): 0.0}
    streams = [await asyncio.open_connection("127.0.0.1", demo.tcp_port) for _ in range(3)]
    ws = await http.ws_connect(demo.http_url + "/ws")
    try:
        await wait_gauge(http, demo, 4)
        for _, writer in streams[:2]:
            writer.close()
            await writer.wait_closed()
        await wait_gauge(http, demo, 2)
        await ws.close()
        await wait_gauge(http, demo, 1)
    finally:
        for _, writer in streams:
            writer.close()
        await ws.close()
    await wait_gauge(http, demo, 0)


async def test_retired_phase_shows_on_the_page(demo: DemoApp, http: aiohttp.ClientSession) -> None:
    async def page() -> str:
        async with http.get(demo.http_url + "/") as resp:
            return await resp.text()

    assert "retired" not in await page()
    # The kubelet rewrites the downward API file when rainbowd annotates the pod.
    demo.annotations_file.write_text(
        'kubernetes.io/config.seen="2026-03-01T12:00:00Z"\nrainbowd.io/phase="retired"\n'
    )

    async def retired() -> str | None:
        text = await page()
        return text if "retired" in text else None

    text = await eventually(retired, "retired on the page")
    assert "The color is #3c3fdc" in text
    assert 'data-phase="retired"' in text


async def test_sigterm_closes_open_streams_and_exits_zero(
    demo: DemoApp, http: aiohttp.ClientSession
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", demo.tcp_port)
    assert await asyncio.wait_for(reader.readline(), DEADLINE) == b"The color is #3c3fdc\n"
    ws = await http.ws_connect(demo.http_url + "/ws")
    assert await ws.receive_str(timeout=DEADLINE) == "The color is #3c3fdc\n"
    code = await asyncio.to_thread(demo.terminate)
    assert code == 0
    while (msg := await ws.receive(timeout=DEADLINE)).type is aiohttp.WSMsgType.TEXT:
        pass
    # A close frame saying "going away", not a dropped connection.
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == 1001
    rest = await asyncio.wait_for(reader.read(), DEADLINE)
    # read() returned, so the server closed the stream; only whole color lines came before.
    assert set(rest.splitlines(keepends=True)) <= {b"The color is #3c3fdc\n"}
    writer.close()
    assert any(e.get("msg") == "demo app stopped" for e in demo.log_lines())


def test_env_defaults_and_color_validation(tmp_path: Path) -> None:
    app = DemoApp(
        "9d2cc9",
        workdir=tmp_path,
        app=None,
        namespace=None,
        env={"APP": "chat-web", "POD_NAMESPACE": "chat"},
    )
    app.start()
    try:
        listening = app.wait_for_log("demo app listening")
        assert (listening["app"], listening["namespace"]) == ("chat-web", "chat")
    finally:
        app.close()

    bad = subprocess.run(
        [sys.executable, "-m", "demo_app", "--color", "not-a-color"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "expected six hex digits" in bad.stderr


def test_read_annotations_parses_downward_api_lines(tmp_path: Path) -> None:
    path = tmp_path / "annotations"
    assert read_annotations(path) == {}
    path.write_text('rainbowd.io/phase="retired"\nnote="say \\"hi\\""\nbroken-line\nplain=value\n')
    assert read_annotations(path) == {
        "rainbowd.io/phase": "retired",
        "note": 'say "hi"',
        "plain": "value",
    }
