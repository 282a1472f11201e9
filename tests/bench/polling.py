"""The polling baseline of bench_scale: what a typical clean-up script or polling janitor does
(kube-janitor style), written for the benchmark so both run against the same control plane and
Prometheus.

Every cycle it LISTs all Deployments and all Services, asks Prometheus one query per color with
replicas, stamps `bench.rainbowd.io/retired-at` (or `live-at`) on colors without one, one PATCH
at a time, and scales to 0 a retired color Prometheus reports at 0 connections. Its own
annotation keys, so it starts from unstamped Deployments whatever rainbowd wrote. Prints one JSON
line per finished cycle.

    python -m tests.bench.polling KUBECONFIG PROMETHEUS_URL INTERVAL_SECONDS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from rainbowd.kube.clients import MERGE_PATCH, make_api_client, request_json, resource_path

USER_AGENT = "polling-baseline/1"
LIVE_AT = "bench.rainbowd.io/live-at"
RETIRED_AT = "bench.rainbowd.io/retired-at"
QUERY_CONCURRENCY = 16


def selected(labels: dict[str, str], services: list[dict[str, Any]]) -> bool:
    """Whether one of a namespace's Services selects pods with `labels`."""
    for svc in services:
        selector = (svc.get("spec") or {}).get("selector") or {}
        if selector and selector.items() <= labels.items():
            return True
    return False


async def connections(
    session: aiohttp.ClientSession, url: str, namespace: str, app: str, color: str
) -> float | None:
    expr = f'sum(rainbow_open_connections{{namespace="{namespace}",app="{app}",color="{color}"}})'
    async with session.post(url + "/api/v1/query", data={"query": expr}) as resp:
        doc = await resp.json()
    result = doc.get("data", {}).get("result") or []
    return float(result[0]["value"][1]) if result else None


async def cycle(api: Any, session: aiohttp.ClientSession, prom_url: str) -> dict[str, int]:
    deployments = (await request_json(api, "GET", resource_path("apps/v1", "deployments")))["items"]
    services: dict[str, list[dict[str, Any]]] = {}
    for svc in (await request_json(api, "GET", resource_path("v1", "services")))["items"]:
        services.setdefault(svc["metadata"]["namespace"], []).append(svc)
    limit = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def ask(d: dict[str, Any]) -> float | None:
        labels = d["spec"]["template"]["metadata"].get("labels") or {}
        async with limit:
            return await connections(
                session,
                prom_url,
                d["metadata"]["namespace"],
                labels.get("app", ""),
                labels.get("color", ""),
            )

    with_replicas = [d for d in deployments if (d["spec"].get("replicas") or 0) > 0]
    figures = await asyncio.gather(*(ask(d) for d in with_replicas))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    stamped = scaled = 0
    for d, conns in zip(with_replicas, figures, strict=True):
        meta = d["metadata"]
        annotations = meta.get("annotations") or {}
        labels = d["spec"]["template"]["metadata"].get("labels") or {}
        path = resource_path(
            "apps/v1", "deployments", namespace=meta["namespace"], name=meta["name"]
        )
        live = selected(labels, services.get(meta["namespace"], []))
        key = LIVE_AT if live else RETIRED_AT
        if key not in annotations:
            body: dict[str, object] = {"metadata": {"annotations": {key: now}}}
            await request_json(api, "PATCH", path, body=body, content_type=MERGE_PATCH)
            stamped += 1
        elif not live and conns == 0:
            body = {"spec": {"replicas": 0}}
            await request_json(api, "PATCH", path + "/scale", body=body, content_type=MERGE_PATCH)
            scaled += 1
    return {
        "deployments": len(deployments),
        "queries": len(figures),
        "stamped": stamped,
        "scaled": scaled,
    }


async def run(kubeconfig: str, prom_url: str, interval: float) -> None:
    api = await make_api_client(kubeconfig=kubeconfig)
    api.user_agent = USER_AGENT
    number = 0
    try:
        async with aiohttp.ClientSession() as session:
            while True:
                began = time.monotonic()
                done = await cycle(api, session, prom_url)
                number += 1
                line = {"cycle": number, "seconds": round(time.monotonic() - began, 3), **done}
                print(json.dumps(line), flush=True)
                await asyncio.sleep(interval)
    finally:
        await api.close()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], float(sys.argv[3])))
