"""The seed's story, played against the running sandbox and told step by step: deploy a color,
hold a connection to it, deploy the next color, and watch rainbowd keep the old one while the
connection lasts and scale it down once it closes; roll back to it, deploy again, and watch
rainbowd burn both old colors down, leaving the live color alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import ColorPlan, State
from rainbowd.core.reporting import compact_duration
from rainbowd.deploy import is_available
from rainbowd.kube.clients import request_json, resource_path
from rainbowd.kube.events import REPORTING_CONTROLLER
from rainbowd.policyfile import load_policy_text
from rainbowd.status import find_color, status_from_document
from rainbowd_sandbox import app as seed
from rainbowd_sandbox.pods import PodRunner
from rainbowd_sandbox.proxy import ServiceProxy

LINE_TIMEOUT = 30.0
"""Seconds to wait for a color line on a stream (one is sent at once, then every 5 s)."""
STEP_TIMEOUT = 180.0
"""Seconds any one step may take beyond the policy's own durations: two busy shared cores."""


class StoryError(RuntimeError):
    """A step of the story did not happen as told."""


def tell(text: str) -> None:
    print(f"story: {text}", flush=True)


class Stream:
    """A client of the color stream, like `telnet host port`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def color(self) -> str:
        """The color of the next line, `The color is #3c3fdc`."""
        try:
            line = await asyncio.wait_for(self.reader.readline(), LINE_TIMEOUT)
        except TimeoutError:
            raise StoryError(f"no color line within {LINE_TIMEOUT:g}s") from None
        text = line.decode(errors="replace").strip()
        if not text:
            raise StoryError("the stream was closed")
        return text.rsplit("#", 1)[-1]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def _poll(
    check: Callable[[], Awaitable[Any]], *, what: str, within: float = STEP_TIMEOUT
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise StoryError(f"not {what} after {within:g}s")
        await asyncio.sleep(0.5)


@dataclass(frozen=True)
class Seen:
    """rainbowd's view of one color in its last plan (/status)."""

    color: ColorPlan
    retired_for: timedelta | None


async def _seen(session: aiohttp.ClientSession, url: str, color: str) -> Seen | None:
    """The color as rainbowd's last plan shows it; None when it is not in the plan."""
    async with session.get(url + "/status") as resp:
        resp.raise_for_status()
        status = status_from_document(await resp.json())
    found = find_color(status, color)
    if found is None or status.plan is None:
        return None
    return Seen(color=found, retired_for=found.retired_for(status.plan.now))


def _connections(seen: Seen | None) -> str:
    value = None if seen is None else seen.color.connections.value
    return "unknown" if value is None else f"{value:g}"


@dataclass(frozen=True)
class Stage:
    """What the story plays on: the running sandbox's parts, handed over by its runner."""

    api: ApiClient
    proxy: ServiceProxy
    pods: PodRunner
    status_url: str
    """rainbowd's base URL: the story reads /status there."""
    namespace: str
    replicas: int
    policy_text: str
    """The policy in force when the story starts."""
    policy_configmap: str
    deploy: Callable[[str], Awaitable[None]]
    """A rainbow deploy of a color, returning once the Service selects it."""
    set_default: Callable[[str, Any], Awaitable[None]]
    """Edits one knob of the policy's defaults in its ConfigMap."""
    rollback: Callable[[], Awaitable[str]]
    """`rainbowd rollback`: the Service back on the previous color, which it returns."""


async def play(sandbox: Stage) -> None:
    """Runs the story once; raises StoryError at the first step that does not happen."""
    streams: list[Stream] = []
    try:
        await _play(sandbox, streams)
    finally:
        for stream in streams:
            await stream.close()


async def _play(sandbox: Stage, streams: list[Stream]) -> None:
    api, proxy, pods = sandbox.api, sandbox.proxy, sandbox.pods
    namespace = sandbox.namespace
    replicas = sandbox.replicas
    status_url = sandbox.status_url
    knobs = load_policy_text(sandbox.policy_text, source="sandbox policy").defaults
    min_age = knobs.min_retired_age
    old, new, fix = _distinct_colors(3)
    old_name, new_name, fix_name = (seed.deployment_name(c) for c in (old, new, fix))

    tell(f"1. deploy color #{old}: Deployment {old_name}, {replicas} replicas, Service to it")
    await sandbox.deploy(old)
    tell(f"   {old_name} is Available and the Service selects #{old}")

    tell(f"2. open a TCP connection to the Service (telnet {proxy.tcp_address})")
    held = await _connect(proxy.tcp_port, streams, expect=old, what="the first connection")
    tell(f"   connection 1 reads: The color is #{old}")

    tell(f"3. deploy color #{new} and switch the Service to it")
    await sandbox.deploy(new)
    other = await _connect(proxy.tcp_port, streams, expect=new, what="a new connection")
    got_old = await held.color()
    if got_old != old:
        raise StoryError(f"connection 1 now reads #{got_old}, expected #{old}")
    tell(f"   a new connection (2) reads #{new}; connection 1 still reads #{got_old}")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        tell(
            f"4. rainbowd sees #{old} retired; with connection 1 open it keeps it past "
            f"minRetiredAge ({compact_duration(min_age)})"
        )

        async def held_past_min_age() -> Seen | None:
            seen = await _seen(session, status_url, old)
            if seen is None:
                return None
            value = seen.color.connections.value
            if (
                seen.color.state is State.DRAINING
                and seen.retired_for is not None
                and seen.retired_for >= min_age
                and value is not None
                and value >= 1
                and seen.color.replicas > 0
            ):
                return seen
            return None

        held_seen: Seen = await _poll(
            held_past_min_age,
            what=f"#{old} draining past minRetiredAge with a connection",
            within=STEP_TIMEOUT + min_age.total_seconds(),
        )
        tell(
            f"   #{old} held while connected: state {held_seen.color.state}, retired for "
            f"{compact_duration(held_seen.retired_for or timedelta())}, "
            f"connections {_connections(held_seen)}, "
            f"replicas {held_seen.color.ready_replicas}/{held_seen.color.replicas}"
            + (f", held: {held_seen.color.held}" if held_seen.color.held else "")
        )

        tell("5. close connection 1")
        await held.close()

        tell(
            f"6. rainbowd waits for #{old} to stay at 0 connections for drainHold "
            f"({compact_duration(knobs.drain_hold)}), then scales it down"
        )
        seen: list[str] = []

        async def scaled_to_zero() -> bool:
            now_seen = await _seen(session, status_url, old)
            state = None if now_seen is None else str(now_seen.color.state)
            if state and (not seen or seen[-1] != state):
                seen.append(state)
                tell(f"   rainbowd: #{old} is {state}, connections {_connections(now_seen)}")
            found = await seed.get_deployment(api, namespace, old)
            if found is None:
                raise StoryError(f"{old_name} was deleted without being scaled down first")
            return int((found.get("spec") or {}).get("replicas", 1)) == 0

        await _poll(scaled_to_zero, what=f"{old_name} scaled to 0")
        event = await _poll(
            lambda: _rainbowd_event(api, namespace, old_name, "scale"),
            what=f"rainbowd's Event on {old_name}",
        )
        tell(f"   {old_name} scaled to 0 replicas by rainbowd; its Event: {event}")
        await _poll(
            _async(lambda: not pods.serving({"color": old})),
            what=f"the pods of #{old} stopped",
        )
        tell(
            f"   the pods of #{old} are gone, and their demo processes with them; {old_name} "
            f"is kept at 0 replicas for a fast rollback (keepScaledDown {knobs.keep_scaled_down})"
        )

    tell(
        f"7. #{new} turns out bad: rainbowd rollback scales {old_name} back to {replicas} "
        f"replicas, waits until it is Available, and switches the Service back to #{old}"
    )
    back = await sandbox.rollback()
    if back != old:
        raise StoryError(f"the rollback went to #{back}, expected #{old}")
    found = await seed.get_deployment(api, namespace, old)
    if found is None or int(found["spec"]["replicas"]) != replicas:
        raise StoryError(f"{old_name} was not scaled back to {replicas}: {found and found['spec']}")
    third = await _connect(
        proxy.tcp_port, streams, expect=old, what="a connection after the rollback"
    )
    still = await other.color()
    if still != new:
        raise StoryError(f"connection 2 reads #{still}, expected #{new}")
    tell(
        f"   {old_name} is back at {replicas} replicas; a new connection (3) reads #{old}; "
        f"connection 2 still reads #{new}, which is now retired"
    )

    tell(f"8. deploy again: color #{fix}, the fixed release, and switch the Service to it")
    await sandbox.deploy(fix)
    last = await _connect(proxy.tcp_port, streams, expect=fix, what="a connection to the fix")
    tell(f"   a new connection (4) reads #{fix}")

    tell(
        f"9. close connections 2 and 3, and set keepScaledDown to 0 in ConfigMap "
        f"{namespace}/{sandbox.policy_configmap}: nothing is kept for a rollback any more, so "
        f"rainbowd deletes #{old} and #{new} once drained"
    )
    await other.close()
    await third.close()
    await sandbox.set_default("keepScaledDown", 0)
    for color, name in ((old, old_name), (new, new_name)):

        async def deleted(color: str = color) -> bool:
            return await seed.get_deployment(api, namespace, color) is None

        await _poll(deleted, what=f"{name} deleted", within=STEP_TIMEOUT + min_age.total_seconds())

        async def delete_event(name: str = name) -> str | None:
            return await _rainbowd_event(api, namespace, name, "delete")

        event = await _poll(delete_event, what=f"rainbowd's Event on deleting {name}")
        tell(f"   {name} deleted by rainbowd; its Event: {event}")

        # The garbage collector removes the ReplicaSet and then the pods after the Deployment.
        def stopped(color: str = color) -> bool:
            return not pods.serving({"color": color})

        await _poll(_async(stopped), what=f"the pods of #{color} stopped")
        tell(f"   the pods of #{color} are gone")

    tell(f"10. the live color #{fix} was never touched")
    found = await seed.get_deployment(api, namespace, fix)
    if found is None or not is_available(found):
        raise StoryError(f"{fix_name} is not Available: {found and found.get('status')}")
    if int(found["spec"]["replicas"]) != replicas:
        raise StoryError(f"{fix_name} has {found['spec']['replicas']} replicas")
    selector = await seed.service_selector(api, namespace)
    if selector.get("color") != fix:
        raise StoryError(f"the Service selects {selector}, expected #{fix}")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        live_seen = await _seen(session, status_url, fix)
    still = await last.color()
    if still != fix:
        raise StoryError(f"connection 4 reads #{still}, expected #{fix}")
    tell(
        f"   #{fix} untouched: {live_seen and live_seen.color.state}, "
        f"{replicas}/{replicas} replicas, "
        f"connection 4 still reads #{still}"
    )
    tell(
        "the story is over: the old colors drained and were burned down, the rollback brought "
        "one back in seconds, and the live one was kept"
    )


def _distinct_colors(count: int) -> list[str]:
    colors: list[str] = []
    while len(colors) < count:
        color = seed.new_color()
        if color not in colors:
            colors.append(color)
    return colors


async def _connect(port: int, streams: list[Stream], *, expect: str, what: str) -> Stream:
    stream = await Stream.open(port)
    streams.append(stream)
    got = await stream.color()
    if got != expect:
        raise StoryError(f"{what} reads #{got}, expected #{expect}")
    return stream


async def _rainbowd_event(api: ApiClient, namespace: str, name: str, action: str) -> str | None:
    """`reason: note` of rainbowd's latest Event with `action` on the Deployment `name`."""
    listing = await request_json(
        api, "GET", resource_path("events.k8s.io/v1", "events", namespace=namespace)
    )
    found = [
        event
        for event in listing.get("items") or []
        if event.get("reportingController") == REPORTING_CONTROLLER
        and (event.get("regarding") or {}).get("name") == name
        and str(event.get("action", "")).lower() == action
    ]
    if not found:
        return None
    latest = max(found, key=lambda e: str(e.get("eventTime") or ""))
    return f"{latest.get('reason')}: {latest.get('note')}"


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return check()

    return wrapped
