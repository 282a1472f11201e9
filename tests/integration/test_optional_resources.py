"""An optional resource (KEDA's ScaledObjects) that rainbowd's RBAC does not cover, as in the
namespaced variant without its KEDA Role: the apiserver answers 403 whether or not the CRD
exists (authorization comes first), so the cache asks discovery. Not served: none, and the
cache is synced (consolidation goes on). Served: the 403 stands, and the store stays unlisted
with the answer as its reason (consolidation says why it cannot step)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Iterator

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from rainbowd.core.model import ObjectKind
from rainbowd.core.objects import color_object_from_k8s
from rainbowd.kube.caching import SCALED_OBJECTS, Backoff, Informer
from rainbowd_sandbox.controlplane import ControlPlane
from tests.integration.test_executing import eventually
from tests.integration.test_keda import CRD_NAME, CRD_PATH, scaled_objects_crd, wait_crd_gone

pytestmark = pytest.mark.cluster_full

NOBODY = "rainbowd-without-keda-rights"


@pytest.fixture
def crd_served(cluster_full: ControlPlane) -> Iterator[None]:
    """KEDA's CRD for one test, gone again (discovery included) before the next one."""
    with scaled_objects_crd(cluster_full):
        yield
    wait_crd_gone(cluster_full, CRD_NAME)


@contextlib.asynccontextmanager
async def scaled_objects_as_nobody(cluster: ControlPlane) -> AsyncIterator[Informer[object]]:
    """The ScaledObjects' informer, optional as the cache makes it, for a user no RBAC covers."""
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(cluster.kubeconfig), client_configuration=configuration
    )
    api = k8s.ApiClient(configuration)
    api.set_default_header("Impersonate-User", NOBODY)
    informer: Informer[object] = Informer(
        api,
        SCALED_OBJECTS,
        functools.partial(color_object_from_k8s, ObjectKind.SCALED_OBJECT),
        optional=True,
        backoff=Backoff(initial=0.1, cap=0.5),
    )
    task = asyncio.create_task(informer.run())
    try:
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()


async def test_not_served_and_forbidden_is_none(cluster_full: ControlPlane) -> None:
    # Another module's CRD may still be being deleted on this control plane.
    wait_crd_gone(cluster_full, CRD_NAME)
    async with scaled_objects_as_nobody(cluster_full) as informer:

        async def absent() -> bool:
            return informer.absent and informer.synced.is_set()

        await eventually(absent, what="ScaledObjects read as not served")
        assert len(informer) == 0 and informer.unlisted_because is None
        # Discovery first: no LIST the apiserver would refuse (an audit of the namespaced
        # variant shows none).
        assert informer.stats.errors == 0 and informer.stats.list_pages == 0


@pytest.mark.usefixtures("crd_served")
async def test_served_and_forbidden_stays_unlisted_with_the_answer(
    cluster_full: ControlPlane,
) -> None:
    async with scaled_objects_as_nobody(cluster_full) as informer:

        async def refused() -> bool:
            return informer.stats.errors >= 2

        await eventually(refused, what="two refused LISTs")
        assert not informer.absent and not informer.synced.is_set()
        assert informer.unlisted_because is not None
        assert "403" in informer.unlisted_because or "forbidden" in informer.unlisted_because


@pytest.mark.usefixtures("crd_served")
async def test_a_refusal_from_when_it_was_served_goes_with_the_crd(
    cluster_full: ControlPlane,
) -> None:
    """Served and refused, then the CRD deleted: the store reads as none, synced, and the old
    403 no longer says why it is unlisted (consolidation would name it as its reason)."""
    async with scaled_objects_as_nobody(cluster_full) as informer:

        async def refused() -> bool:
            return informer.unlisted_because is not None

        await eventually(refused, what="a refused LIST")
        cluster_full.request("DELETE", f"{CRD_PATH}/{CRD_NAME}")

        async def absent() -> bool:
            return informer.absent and informer.synced.is_set()

        await eventually(absent, what="ScaledObjects read as not served")
        assert len(informer) == 0 and informer.unlisted_because is None
