"""The seed's app in the sandbox: its Deployment and Service as a `__COLOR__` template, and the
request `rainbowd deploy` gets for a color of it (the deploy itself is rainbowd.deploy's).
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd.deploy import COLOR_PLACEHOLDER, AppRef, DeployRequest
from rainbowd.kube.clients import Conflict, NotFound, request_json, resource_path

APP = "rainbow-deploys"
NAMESPACE = "default"
HTTP_PORT = 8080
TCP_PORT = 8081
# A deploy waits this long for its Deployment to become Available: pods of the fake node are
# ready in a second, the demo processes standing in for them a few seconds later.
AVAILABLE_TIMEOUT = 120.0


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


async def service_selector(api: ApiClient, namespace: str, *, app: str = APP) -> dict[str, str]:
    """The Service's selector; empty when there is no Service yet."""
    path = resource_path("v1", "services", namespace=namespace, name=app)
    try:
        service = await request_json(api, "GET", path)
    except NotFound:
        return {}
    return dict((service.get("spec") or {}).get("selector") or {})


def template(*, app: str = APP, replicas: int = 2) -> str:
    """The app as the seed's app.yaml has it: its Service and one Deployment, with __COLOR__."""
    return yaml.safe_dump_all(
        [
            service_body(COLOR_PLACEHOLDER, app=app),
            deployment_body(COLOR_PLACEHOLDER, app=app, replicas=replicas),
        ],
        sort_keys=False,
    )


def app_ref(namespace: str, *, app: str = APP) -> AppRef:
    return AppRef(namespace=namespace, app=app, service=app)


def deploy_request(
    namespace: str, color: str, *, app: str = APP, replicas: int = 2
) -> DeployRequest:
    """`rainbowd deploy -f <the template> --color COLOR` for the sandbox's app."""
    return DeployRequest(
        ref=app_ref(namespace, app=app),
        color=color,
        template=template(app=app, replicas=replicas),
        template_source=f"the sandbox's {app} template",
        timeout=AVAILABLE_TIMEOUT,
    )
