"""The namespaced variant end to end: rainbowd authenticated as its own ServiceAccount (a real
token, so the apiserver applies exactly k8s/namespaced's Roles) burns down old colors in the
namespaces it lists, and cannot touch a color anywhere else."""

from __future__ import annotations

import contextlib
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import RETIRED_AT
from rainbowd.kube.clients import MERGE_PATCH, Forbidden, make_api_client, request_json
from rainbowd.settings import PolicySource
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.demoapps import DemoApp
from tests.e2e.harness import (
    APP,
    annotations_of,
    create_color,
    daemon_settings,
    deployment_path,
    eventually,
    fetch_json,
    get_deployment,
    lease_holder,
    our_events,
    point_service,
    policy_text,
    prom_query,
    put_configmap,
    replicas,
    running_daemon,
)
from tests.installtools import install_namespaced_rbac, service_account_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

MANAGED = ("team-a", "team-b")
SERVICE_ACCOUNT = "system:serviceaccount:rainbowd:rainbowd"
# Created in this order; NEW is the release the Service selects.
OLDEST, OLD, NEW = "aaaaaa", "bbbbbb", "cccccc"


@pytest.fixture
def own_namespace_cleaned(cluster_full: ControlPlane) -> Iterator[None]:
    """The policy ConfigMap and Lease this test makes in rainbowd's namespace go afterwards, so
    that later tests (e.g. dry runs of a fresh install) find that namespace as shipped."""
    yield
    for path in (
        "/api/v1/namespaces/rainbowd/configmaps/rainbowd-policy",
        "/apis/coordination.k8s.io/v1/namespaces/rainbowd/leases/rainbowd",
    ):
        try:
            cluster_full.request("DELETE", path)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise


@contextlib.contextmanager
def demo_apps(prometheus: PrometheusServer, workdir: Path) -> Iterator[list[DemoApp]]:
    """One demo_app per color and managed namespace, scraped by the test's Prometheus."""
    apps = [
        DemoApp(color, workdir=workdir / ns, app=APP, namespace=ns)
        for ns in MANAGED
        for color in (OLDEST, OLD, NEW)
    ]
    try:
        for app in apps:
            (workdir / str(app.namespace)).mkdir(exist_ok=True)
            app.start()
        prometheus.set_targets([(app.target, {}) for app in apps])
        yield apps
    finally:
        for app in apps:
            app.close()


async def test_namespaced_variant_burns_down_only_in_its_namespaces(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    tmp_path: Path,
    own_namespace_cleaned: None,
) -> None:
    install_namespaced_rbac(cluster_full)
    kubeconfig = service_account_kubeconfig(cluster_full, tmp_path / "rainbowd.kubeconfig")
    elsewhere = namespace  # a namespace the variant does not list

    # The same releases in every namespace: OLDEST and OLD retired, NEW live.
    for ns in (*MANAGED, elsewhere):
        for color in (OLDEST, OLD, NEW):
            await create_color(kube_api, ns, color)
        await point_service(kube_api, ns, NEW)

    with demo_apps(prometheus, tmp_path):

        async def scraped() -> bool:
            found = await prom_query(prometheus.url, "rainbow_open_connections == 0")
            return len(found) == 3 * len(MANAGED)

        await eventually(scraped, what="Prometheus to scrape the demo apps")

        # The policy lives where the variant's own Role lets rainbowd read it.
        policy = policy_text(prometheus.url, ", ".join(MANAGED), keep_scaled_down=1)
        await put_configmap(kube_api, "rainbowd", "rainbowd-policy", policy)
        settings = daemon_settings(
            cluster_full,
            namespace,
            policy=PolicySource(configmap_namespace="rainbowd", configmap_name="rainbowd-policy"),
            kubeconfig=str(kubeconfig),
            namespaces=MANAGED,
            leader_elect=True,
            lease_namespace="rainbowd",
            lease_name="rainbowd",
            identity="rainbowd-namespaced",
        )
        async with running_daemon(settings) as daemon:
            assert daemon.http_url is not None

            async def leads() -> bool:
                return await lease_holder(kube_api, "rainbowd") == "rainbowd-namespaced"

            await eventually(leads, what="the ServiceAccount's daemon to hold the Lease")

            # Both retired colors drained: scaled to 0, and the one beyond keepScaledDown (1)
            # deleted, in both namespaces.
            for ns in MANAGED:

                async def burned_down(ns: str = ns) -> bool:
                    return (
                        await get_deployment(kube_api, ns, f"{APP}-{OLDEST}") is None
                        and await replicas(kube_api, ns, f"{APP}-{OLD}") == 0
                    )

                await eventually(burned_down, what=f"the old colors in {ns} to be burned down")
                assert await replicas(kube_api, ns, f"{APP}-{NEW}") == 1
                reasons = {e["reason"] for e in await our_events(kube_api, ns)}
                assert {"MarkedRetired", "ScaledDown", "Deleted"} <= reasons, reasons

            # It never needed more: the apiserver refused none of its calls.
            calls = [
                e for e in cluster_full.audit_events() if e["user"]["username"] == SERVICE_ACCOUNT
            ]
            assert {"list", "patch", "delete"} <= {e["verb"] for e in calls}
            refused = [
                f"{e['verb']} {e['requestURI']}"
                for e in calls
                if e["responseStatus"]["code"] == 403
            ]
            assert not refused, refused

            # Elsewhere nothing was seen, stamped, scaled or deleted.
            status = await fetch_json(daemon.http_url + "/status")
            seen = {app["namespace"] for app in status["plan"]["apps"]}
            assert seen == set(MANAGED), seen
            for color in (OLDEST, OLD):
                name = f"{APP}-{color}"
                assert await replicas(kube_api, elsewhere, name) == 1
                assert RETIRED_AT not in await annotations_of(kube_api, elsewhere, name)
            assert not await our_events(kube_api, elsewhere)

    # And it could not have: as the ServiceAccount, scaling the old color there is refused.
    api = await make_api_client(kubeconfig=str(kubeconfig))
    try:
        with pytest.raises(Forbidden):
            await request_json(
                api,
                "PATCH",
                deployment_path(elsewhere, f"{APP}-{OLD}") + "/scale",
                body={"spec": {"replicas": 0}},
                content_type=MERGE_PATCH,
            )
        with pytest.raises(Forbidden):
            await request_json(api, "GET", "/apis/apps/v1/deployments")
    finally:
        await api.close()
    assert await replicas(kube_api, elsewhere, f"{APP}-{OLD}") == 1
