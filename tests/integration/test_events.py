"""EventRecorder against a real apiserver, and against loopback servers that fail or hang."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration

from rainbowd.kube.clients import request_json, resource_path
from rainbowd.kube.events import NOTE_LIMIT, REPORTING_CONTROLLER, EventRecorder, cut_note


async def list_events(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    listing = await request_json(
        api, "GET", resource_path("events.k8s.io/v1", "events", namespace=namespace)
    )
    return [e for e in listing["items"] if e.get("reportingController") == REPORTING_CONTROLLER]


async def create_configmap(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}
    return await request_json(
        api, "POST", resource_path("v1", "configmaps", namespace=namespace), body=body
    )


@pytest.mark.cluster
async def test_emit_writes_an_event_regarding_the_object(
    kube_api: ApiClient, namespace: str
) -> None:
    cm = await create_configmap(kube_api, namespace, "rainbowd-policy")
    recorder = EventRecorder(kube_api, instance="rainbowd-7d9f-abcde")
    before = datetime.now(UTC) - timedelta(seconds=5)

    await recorder.emit(
        kind="ConfigMap",
        api_version="v1",
        namespace=namespace,
        name="rainbowd-policy",
        uid=cm["metadata"]["uid"],
        type="Warning",
        reason="InvalidPolicy",
        note='rules[0].connectionFloor: expected a non-negative integer, got "ten"',
        action="LoadPolicy",
    )

    events = await list_events(kube_api, namespace)
    assert len(events) == 1
    event = events[0]
    assert event["type"] == "Warning"
    assert event["reason"] == "InvalidPolicy"
    assert event["action"] == "LoadPolicy"
    assert event["note"] == 'rules[0].connectionFloor: expected a non-negative integer, got "ten"'
    assert event["reportingController"] == "rainbowd.io/rainbowd"
    assert event["reportingInstance"] == "rainbowd-7d9f-abcde"
    assert event["regarding"] == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "namespace": namespace,
        "name": "rainbowd-policy",
        "uid": cm["metadata"]["uid"],
    }
    assert event["metadata"]["name"].startswith("rainbowd-policy.")
    when = datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))
    assert before <= when <= datetime.now(UTC) + timedelta(seconds=5)


@pytest.mark.cluster
async def test_each_emit_is_a_new_event(kube_api: ApiClient, namespace: str) -> None:
    recorder = EventRecorder(kube_api, instance="test")
    for i in range(3):
        await recorder.emit(
            kind="Deployment",
            api_version="apps/v1",
            namespace=namespace,
            name="chat-abc123",
            uid="",
            type="Normal",
            reason="DrainStarted",
            note=f"round {i}",
            action="Annotate",
        )
    events = await list_events(kube_api, namespace)
    assert sorted(e["note"] for e in events) == ["round 0", "round 1", "round 2"]
    assert len({e["metadata"]["name"] for e in events}) == 3


@pytest.mark.cluster
async def test_long_note_is_cut_to_1_kib_and_accepted(kube_api: ApiClient, namespace: str) -> None:
    recorder = EventRecorder(kube_api, instance="test")
    note = "connexions drainées " * 200  # multi-byte characters, far over 1 KiB
    await recorder.emit(
        kind="Deployment",
        api_version="apps/v1",
        namespace=namespace,
        name="chat-abc123",
        uid="",
        type="Normal",
        reason="ScaledDown",
        note=note,
        action="Scale",
    )
    events = await list_events(kube_api, namespace)
    assert len(events) == 1
    stored = events[0]["note"]
    assert len(stored.encode("utf-8")) <= NOTE_LIMIT
    assert stored == cut_note(note)
    assert stored.startswith("connexions drainées connexions")


@pytest.mark.cluster
async def test_a_rejected_event_is_logged_not_raised(
    kube_api: ApiClient, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rainbowd.kube.events")
    recorder = EventRecorder(kube_api, instance="test")
    await recorder.emit(
        kind="Deployment",
        api_version="apps/v1",
        namespace=f"{namespace}-missing",
        name="chat-abc123",
        uid="",
        type="Normal",
        reason="ScaledDown",
        note="scaled down",
        action="Scale",
    )
    records = [r for r in caplog.records if r.getMessage() == "event not recorded"]
    assert len(records) == 1
    fields = records[0].rainbowd_fields  # type: ignore[attr-defined]
    assert fields["status"] == 404
    assert fields["reason"] == "ScaledDown"


def test_cut_note_keeps_whole_characters() -> None:
    assert cut_note("short") == "short"
    cut = cut_note("é" * 600)  # 1200 bytes
    assert len(cut.encode("utf-8")) <= NOTE_LIMIT
    assert cut.endswith("...")
    assert set(cut[:-3]) == {"é"}


@contextlib.asynccontextmanager
async def fake_apiserver(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[ApiClient]:
    """An ApiClient talking to a loopback HTTP server that answers every request with
    `handler`: for faults a real apiserver cannot be made to produce on demand."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    api = ApiClient(configuration=Configuration(host=f"http://127.0.0.1:{port}"))
    try:
        yield api
    finally:
        await api.close()
        await runner.cleanup()


@pytest.fixture
async def hanging_api() -> AsyncIterator[ApiClient]:
    """An ApiClient whose server accepts requests and never answers them."""
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=503)

    async with fake_apiserver(hang) as api:
        try:
            yield api
        finally:
            release.set()


@pytest.fixture
async def failing_api() -> AsyncIterator[ApiClient]:
    """An ApiClient whose server answers every request with a 500."""

    async def fail(request: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "Status", "status": "Failure", "message": "etcd is sad", "code": 500},
            status=500,
        )

    async with fake_apiserver(fail) as api:
        yield api


async def _emit(recorder: EventRecorder) -> None:
    await recorder.emit(
        kind="Deployment",
        api_version="apps/v1",
        namespace="chat",
        name="chat-abc123",
        uid="",
        type="Normal",
        reason="ScaledDown",
        note="scaled down",
        action="Scale",
    )


async def test_a_hanging_apiserver_is_bounded_by_the_timeout(
    hanging_api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rainbowd.kube.events")
    recorder = EventRecorder(hanging_api, instance="test", timeout=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _emit(recorder)
    elapsed = loop.time() - started
    assert 0.4 <= elapsed < 5.0
    records = [r for r in caplog.records if r.getMessage() == "event not recorded"]
    assert len(records) == 1
    assert records[0].rainbowd_fields["error"] == "timed out"  # type: ignore[attr-defined]


async def test_a_failing_apiserver_is_logged_not_raised(
    failing_api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rainbowd.kube.events")
    recorder = EventRecorder(failing_api, instance="test")
    await _emit(recorder)
    records = [r for r in caplog.records if r.getMessage() == "event not recorded"]
    assert len(records) == 1
    fields = records[0].rainbowd_fields  # type: ignore[attr-defined]
    assert fields["status"] == 500
    assert "etcd is sad" in fields["error"]
