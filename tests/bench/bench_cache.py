"""Benchmark: initial sync time and memory of the Deployment cache for N Deployments.

Starts its own control plane, creates N Deployments (RAINBOWD_BENCH_DEPLOYMENTS, default 2,000)
through the API, then times a cold LIST into the cache and measures what the cache keeps.
Targets for 10,000 Deployments: initial sync <= 10 s, RSS <= 150 MB.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import time
import tracemalloc
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.core.objects import deployment_from_k8s
from rainbowd.kube.caching import DEPLOYMENTS, Informer
from rainbowd.kube.clients import make_api_client, request_json, resource_path
from rainbowd_sandbox.controlplane import ControlPlane

NAMESPACES = 20
CONCURRENCY = 32


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def deployment(index: int) -> dict[str, Any]:
    app = f"app-{index // 5:05d}"
    color = f"{index:06x}"
    labels = {"app": app, "color": color}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{app}-{color}",
            "labels": {"app": app, "team": "chat"},
            "annotations": {
                "rainbowd.io/live-at": "2026-11-21T10:00:00Z",
                "deployment.kubernetes.io/revision": "1",
                "team.example.com/owner": "platform-chat",
            },
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": f"registry.invalid/chat:{color}",
                            "ports": [{"containerPort": 8080}],
                            "env": [{"name": "COLOR", "value": color}],
                        }
                    ]
                },
            },
        },
    }


async def populate(api: ApiClient, count: int) -> float:
    began = time.monotonic()
    for n in range(NAMESPACES):
        await request_json(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": f"b{n}"}})
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            path = resource_path("apps/v1", "deployments", namespace=f"b{i % NAMESPACES}")
            await request_json(api, "POST", path, body=deployment(i))

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.monotonic() - began


async def sync_once(api: ApiClient) -> tuple[Informer[Any], float]:
    informer = Informer(api, DEPLOYMENTS, deployment_from_k8s)
    loop = asyncio.get_running_loop()
    began = loop.time()
    task = asyncio.create_task(informer.run())
    await informer.synced.wait()
    seconds = loop.time() - began
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return informer, seconds


async def measure(kubeconfig: str, count: int) -> dict[str, float]:
    api = await make_api_client(kubeconfig=kubeconfig)
    try:
        created = await populate(api, count)
        gc.collect()
        # A daemon's first sync is cold too: no warm-up pass, so the RSS delta is not hidden
        # by memory the allocator kept from an earlier pass.
        rss_before = rss_bytes()
        informer, sync_seconds = await sync_once(api)
        gc.collect()
        rss_after = rss_bytes()
        assert len(informer) == count, f"cached {len(informer)} of {count}"
        del informer
        gc.collect()

        tracemalloc.start()
        informer, _ = await sync_once(api)
        gc.collect()
        retained, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del informer
        return {
            "deployments": count,
            "create_seconds": created,
            "initial_sync_seconds": sync_seconds,
            "rss_total_mb": rss_after / 2**20,
            "rss_delta_mb": (rss_after - rss_before) / 2**20,
            "traced_retained_mb": retained / 2**20,
            "traced_peak_mb": peak / 2**20,
        }
    finally:
        await api.close()


def main() -> None:
    count = int(os.environ.get("RAINBOWD_BENCH_DEPLOYMENTS", "2000"))
    with ControlPlane() as cluster:
        results = asyncio.run(measure(str(cluster.kubeconfig), count))
    print(f"bench_cache: {count} Deployments through a cold LIST into the cache")
    print(f"  created through the API      {results['create_seconds']:8.2f} s")
    print(f"  initial sync                 {results['initial_sync_seconds']:8.2f} s")
    print(f"  RSS delta of the sync        {results['rss_delta_mb']:8.1f} MB")
    print(f"  RSS of the process after it  {results['rss_total_mb']:8.1f} MB")
    print(f"  tracemalloc: cache retained  {results['traced_retained_mb']:8.1f} MB")
    print(f"  tracemalloc: peak during it  {results['traced_peak_mb']:8.1f} MB")
    per = results["traced_retained_mb"] * 2**20 / max(1, count)
    print(f"  retained per Deployment      {per / 1024:8.2f} KB")
    print("  targets (10,000 Deployments): initial sync <= 10 s, RSS <= 150 MB")


if __name__ == "__main__":
    main()
