"""The fault suite's witness keeps one span per held connection: connections on one color each
end their own span, in whatever order they close, so a later action on the drained color is not
called wrongful (found by the soak: with two connections held at once, each close ended the last
span, and the first one stayed open forever)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd_sandbox.controlplane import ControlPlane
from tests.demoapps import DemoApp
from tests.e2e.faultlog import Witness

NAME = "chat-aaaaaa"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoApp]:
    app = DemoApp("aaaaaa", workdir=tmp_path, app="chat", namespace="ns").start()
    try:
        yield app
    finally:
        app.close()


@pytest.mark.parametrize("order", ["first opened first", "last opened first"])
async def test_each_held_connection_ends_its_own_span(demo: DemoApp, order: str) -> None:
    # Only the held-connection bookkeeping is exercised: no API client or control plane needed.
    witness = Witness(cast(ApiClient, None), cast(ControlPlane, None), "ns", "test")
    first, second = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
    await first.enter_async_context(witness.holding_connection(demo, NAME))
    await second.enter_async_context(witness.holding_connection(demo, NAME))
    for stack in (first, second) if order == "first opened first" else (second, first):
        await stack.aclose()
    spans = witness.holding[NAME]
    assert len(spans) == 2
    assert all(end is not None for _, end in spans), spans
