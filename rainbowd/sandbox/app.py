"""The seed's app in the sandbox: its Deployment and Service, and the rainbow deploy itself
(create the color's Deployment, wait until it is Available, point the Service at it).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.kube.clients import (
    MERGE_PATCH,
    Conflict,
    KubeError,
    NotFound,
    request_json,
    resource_path,
)

APP = "rainbow-deploys"
NAMESPACE = "default"
HTTP_PORT = 8080
TCP_PORT = 8081
# A deploy waits this long for its Deployment to become Available: pods of the fake node are
# ready in a second, the demo processes standing in for them a few seconds later.
AVAILABLE_TIMEOUT = 120.0


class DeployError(RuntimeError):
    """A color could not be deployed: the API refused it, or it never became Available."""


def new_color() -> str:
    """Six random hex digits: the sandbox has no git sha to take a color from."""
    return secrets.token_hex(3)


def deployment_name(color: str, *, app: str = APP) -> str:
    return f"{app}-{color}"


def deployment_body(color: str, *, app: str = APP, replicas: int = 2) -> dict[str, Any]:
    """The seed's app.yaml Deployment: the color label on the pod template only."""
    labels = {"app": app, "color": color}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(color, app=app), "labels": {"app": app}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": app,
                            # Never pulled: the fake node runs no containers, the sandbox runs a
                            # demo_app process per ready pod instead.
                            "image": f"registry.invalid/{app}:{color}",
                            "ports": [
                                {"name": "http", "containerPort": HTTP_PORT},
                                {"name": "tcp", "containerPort": TCP_PORT},
                            ],
                        }
                    ]
                },
            },
        },
    }


def service_body(color: str, *, app: str = APP) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "labels": {"app": app}},
        "spec": {
            "selector": {"app": app, "color": color},
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT},
                {"name": "tcp", "port": TCP_PORT, "targetPort": TCP_PORT},
            ],
        },
    }


async def ensure_namespace(api: ApiClient, namespace: str) -> None:
    with contextlib.suppress(Conflict):  # already there
        await request_json(
            api, "POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}}
        )


async def get_deployment(
    api: ApiClient, namespace: str, color: str, *, app: str = APP
) -> dict[str, Any] | None:
    path = resource_path(
        "apps/v1", "deployments", namespace=namespace, name=deployment_name(color, app=app)
    )
    try:
        return await request_json(api, "GET", path)
    except NotFound:
        return None


def is_available(deployment: dict[str, Any]) -> bool:
    """All wanted replicas ready and the Available condition true."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return (
        int(status.get("readyReplicas") or 0) >= wanted
        and int(status.get("updatedReplicas") or 0) >= wanted
        and conditions.get("Available") == "True"
    )


async def create_color(
    api: ApiClient, namespace: str, color: str, *, app: str = APP, replicas: int = 2
) -> None:
    path = resource_path("apps/v1", "deployments", namespace=namespace)
    try:
        await request_json(
            api, "POST", path, body=deployment_body(color, app=app, replicas=replicas)
        )
    except Conflict:
        raise DeployError(f"{deployment_name(color, app=app)} already exists") from None


async def wait_available(
    api: ApiClient,
    namespace: str,
    color: str,
    *,
    app: str = APP,
    within: float = AVAILABLE_TIMEOUT,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = await get_deployment(api, namespace, color, app=app)
        if found is None:
            raise DeployError(f"{deployment_name(color, app=app)} disappeared")
        if is_available(found):
            return
        if loop.time() > deadline:
            raise DeployError(
                f"{deployment_name(color, app=app)} not Available after {within:g}s: "
                f"{found.get('status')}"
            )
        await asyncio.sleep(0.25)


async def service_selector(api: ApiClient, namespace: str, *, app: str = APP) -> dict[str, str]:
    """The Service's selector; empty when there is no Service yet."""
    path = resource_path("v1", "services", namespace=namespace, name=app)
    try:
        service = await request_json(api, "GET", path)
    except NotFound:
        return {}
    return dict((service.get("spec") or {}).get("selector") or {})


async def point_service(api: ApiClient, namespace: str, color: str, *, app: str = APP) -> None:
    """Creates the Service selecting `color`, or switches its selector to it."""
    path = resource_path("v1", "services", namespace=namespace, name=app)
    try:
        await request_json(
            api,
            "PATCH",
            path,
            body={"spec": {"selector": {"app": app, "color": color}}},
            content_type=MERGE_PATCH,
        )
    except NotFound:
        await request_json(
            api,
            "POST",
            resource_path("v1", "services", namespace=namespace),
            body=service_body(color, app=app),
        )


async def deploy(
    api: ApiClient,
    namespace: str,
    color: str,
    *,
    app: str = APP,
    replicas: int = 2,
    within: float = AVAILABLE_TIMEOUT,
) -> None:
    """A rainbow deploy: a new Deployment for the color, Available, then the Service switched."""
    try:
        await create_color(api, namespace, color, app=app, replicas=replicas)
        await wait_available(api, namespace, color, app=app, within=within)
        await point_service(api, namespace, color, app=app)
    except KubeError as exc:
        raise DeployError(f"deploy of {deployment_name(color, app=app)}: {exc}") from exc
