"""`rainbowd status --watch` and the terminal table: swatches in each color's own color where the
terminal has colors, cluster text never read as markup, redrawn in place on a terminal, and plain
text when piped."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import sys
from asyncio.subprocess import PIPE, Process
from collections.abc import Awaitable, Callable
from typing import Any

from rich.console import Console

from rainbowd.core.reporting import plan_to_document, render_plan_table
from rainbowd.status import plan_from_document
from rainbowd.terminal import plan_view, swatch
from tests.statusserver import FixedStatus, serving
from tests.unit.test_status_command import sample_plan

WITHIN = 60.0


def rendered(renderable: Any, *, color_system: str | None) -> str:
    console = Console(
        force_terminal=color_system is not None,
        color_system=color_system,  # type: ignore[arg-type]
        width=200,
        record=True,
        file=open(os.devnull, "w"),  # noqa: SIM115
    )
    console.print(renderable)
    return console.export_text(styles=color_system is not None)


def test_each_color_is_painted_in_its_own_color_beside_its_value() -> None:
    text = rendered(plan_view(sample_plan()), color_system="truecolor")
    assert "\x1b[48;2;187;187;187m  \x1b[0m bbbbbb" in text  # #bbbbbb as a background
    assert "\x1b[48;2;170;170;170m" in text
    assert "drained" in text and "no Service selects any color" in text


def test_a_color_that_is_no_color_shows_its_text_only() -> None:
    assert rendered(swatch("blue"), color_system="truecolor").startswith("\x1b[44m")
    assert rendered(swatch("not-a-color"), color_system=None).strip() == "?? not-a-color"


def test_cluster_text_is_not_read_as_markup() -> None:
    document = plan_to_document(sample_plan())
    document["apps"][0]["colors"][0]["note"] = "[bold red]boom[/bold red] [link=x]y[/link]"
    text = rendered(plan_view(plan_from_document(document)), color_system=None)
    assert "[bold red]boom[/bold red] [link=x]y[/link]" in text


def status_document() -> dict[str, Any]:
    return {
        "identity": "rainbowd-0",
        "leader": True,
        "ready": True,
        "policy": {"source": "file:p.yaml", "valid": True},
        "cycle": None,
        "plan": json.loads(json.dumps(plan_to_document(sample_plan()))),
    }


async def read_until(
    read: Callable[[], Awaitable[bytes]], wanted: list[bytes], proc: Process
) -> bytes:
    """Output until every `wanted` piece has appeared, or fail with what came."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN
    seen = b""
    while not all(piece in seen for piece in wanted):
        assert loop.time() < deadline, f"not all of {wanted} within {WITHIN:g}s: {seen!r}"
        assert proc.returncode is None, f"exited {proc.returncode}: {seen!r}"
        try:
            seen += await asyncio.wait_for(read(), 5)
        except TimeoutError:
            continue
    return seen


async def stop(proc: Process) -> None:
    proc.terminate()
    await asyncio.wait_for(proc.wait(), WITHIN)


def watch_command(url: str) -> list[str]:
    return [sys.executable, "-m", "rainbowd", "status", "--url", url, "--watch", "0.2"]


async def test_on_a_terminal_the_table_is_redrawn_in_place_in_color() -> None:
    view = FixedStatus(status_document())
    async with serving(view) as server:
        controller, terminal = pty.openpty()
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor", "COLUMNS": "200"}
        env.pop("NO_COLOR", None)
        proc = await asyncio.create_subprocess_exec(
            *watch_command(server.url), stdout=terminal, stderr=terminal, env=env
        )
        os.close(terminal)
        loop = asyncio.get_running_loop()

        async def read() -> bytes:
            return await loop.run_in_executor(None, os.read, controller, 65536)

        try:
            await read_until(read, [b"bbbbbb", b"\x1b[48;2;187;187;187m"], proc)
            view.document = {**status_document(), "plan": None}
            # The redraw moves the cursor back up over the last table instead of scrolling.
            out = await read_until(read, [b"no plan yet"], proc)
            assert b"\x1b[1A" in out or b"\x1b[A" in out, out[-400:]
        finally:
            await stop(proc)
            os.close(controller)


async def test_piped_it_prints_the_plain_table_as_it_changes() -> None:
    view = FixedStatus(status_document())
    plain = render_plan_table(sample_plan())
    async with serving(view) as server:
        proc = await asyncio.create_subprocess_exec(
            *watch_command(server.url), stdout=PIPE, stderr=PIPE
        )
        assert proc.stdout is not None
        stdout = proc.stdout

        async def read() -> bytes:
            return await stdout.read(65536)

        try:
            out = await read_until(read, [b"---", plain.encode()], proc)
            assert b"\x1b[" not in out
            view.document = {**status_document(), "plan": None}
            out += await read_until(read, [b"no plan yet"], proc)
            assert out.count(b"--- ") == 2, out
        finally:
            await stop(proc)


async def test_ctrl_c_stops_it_even_when_started_with_sigint_ignored() -> None:
    """A shell's background job starts with SIGINT ignored, and its children inherit that: the
    command takes SIGINT back at start (rainbowd.cli.interruptible), as kubectl does."""
    view = FixedStatus(status_document())
    async with serving(view) as server:
        proc = await asyncio.create_subprocess_exec(
            *watch_command(server.url),
            stdout=PIPE,
            stderr=PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        assert proc.stdout is not None
        stdout = proc.stdout

        async def read() -> bytes:
            return await stdout.read(65536)

        try:
            await read_until(read, [b"---"], proc)
            proc.send_signal(signal.SIGINT)
            # Stopped by Ctrl-C, as the watch is meant to be: exit 0.
            assert await asyncio.wait_for(proc.wait(), WITHIN) == 0
        finally:
            if proc.returncode is None:
                await stop(proc)
