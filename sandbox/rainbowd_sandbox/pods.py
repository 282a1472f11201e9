"""The sandbox's pods: one demo_app process for each ready pod of the app, started and stopped as
pods come, go and stop being ready, and handed to Prometheus as scrape targets (file_sd).

The fake node runs no containers, so these processes are what a user connects to. Stopping one
closes its connections, as deleting the pod would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.kube.clients import KubeError, request_json, resource_path
from rainbowd.logs import get_logger
from rainbowd_sandbox.app import service_selector
from rainbowd_sandbox.procs import Process
from rainbowd_sandbox.prometheus import PrometheusServer

log = get_logger(__name__)

POLL_INTERVAL = 1.0
"""Seconds between two reads of the pods: a scale-down shows within about a second."""
LISTEN_TIMEOUT = 30.0
"""Seconds a demo process gets to log its ports: a Python start on a busy machine."""
STREAM_INTERVAL = 5.0
"""Seconds between the color lines of a TCP stream, as in the seed's app."""
PROMETHEUS_JOB = "pods"


@dataclass
class DemoPod:
    """One ready pod and the demo process standing in for it."""

    name: str
    color: str
    labels: dict[str, str]
    process: Process
    annotations_file: Path
    http_port: int = 0
    tcp_port: int = 0
    starting: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def serving(self) -> bool:
        return self.tcp_port != 0 and self.process.running()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1 {self.tcp_port}"


def _ready(pod: Mapping[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False  # terminating: its container would have got SIGTERM
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def downward_annotations(annotations: Mapping[str, str]) -> str:
    """The pod's annotations as the downward API writes them: `key="value"` lines."""
    return "".join(f"{key}={json.dumps(value)}\n" for key, value in sorted(annotations.items()))


class PodRunner:
    """Keeps one demo_app process per ready pod of `app` in `namespace`; `run()` until cancelled.

    `on_change(pod, event)` is told when a pod starts serving ("serving") or its process is
    stopped ("stopped"). Each pass also reads the app's Service, whose selector is kept in
    `selector` for the loopback Service (`ServiceProxy`).
    """

    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str,
        app: str,
        workdir: Path,
        prometheus: PrometheusServer,
        on_change: Callable[[DemoPod, str], None] | None = None,
        interval: float = STREAM_INTERVAL,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.app = app
        self.workdir = workdir
        self.prometheus = prometheus
        self.on_change = on_change
        self.interval = interval
        self.pods: dict[str, DemoPod] = {}
        self.selector: dict[str, str] = {}

    def serving(self, selector: Mapping[str, str] | None = None) -> list[DemoPod]:
        """The pods serving now, those whose labels include `selector` when given."""
        return [
            pod
            for pod in self.pods.values()
            if pod.serving
            and (selector is None or all(pod.labels.get(k) == v for k, v in selector.items()))
        ]

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.sync()
                except KubeError as exc:
                    log.warning("pods not listed", namespace=self.namespace, error=str(exc))
                await asyncio.sleep(POLL_INTERVAL)
        finally:
            await self.stop_all()

    async def sync(self) -> None:
        """One pass: start processes for new ready pods, stop those of pods gone or not ready."""
        listing = await request_json(
            self.api,
            "GET",
            resource_path("v1", "pods", namespace=self.namespace),
            query={"labelSelector": f"app={self.app}"},
        )
        ready: dict[str, Mapping[str, Any]] = {}
        for item in listing.get("items") or []:
            if _ready(item):
                ready[str(item["metadata"]["name"])] = item
        for name in [n for n in self.pods if n not in ready]:
            await self._stop(self.pods.pop(name))
        self.selector = await service_selector(self.api, self.namespace, app=self.app)
        for name, item in ready.items():
            meta = item["metadata"]
            pod = self.pods.get(name)
            if pod is None:
                pod = self._start(name, dict(meta.get("labels") or {}))
                self.pods[name] = pod
            elif pod.starting is None and not pod.process.running():
                log.warning("demo process exited, restarting", pod=name)
                await self._stop(pod)
                self.pods[name] = pod = self._start(name, pod.labels)
            self._write_annotations(pod, dict(meta.get("annotations") or {}))

    def _start(self, name: str, labels: dict[str, str]) -> DemoPod:
        color = labels.get("color", "")
        annotations = self.workdir / f"{name}.annotations"
        process = Process(
            name,
            [
                sys.executable,
                "-m",
                "demo_app",
                f"--app={self.app}",
                f"--color={color}",
                f"--namespace={self.namespace}",
                "--host=127.0.0.1",
                "--http-port=0",
                "--tcp-port=0",
                f"--interval={self.interval:g}",
                f"--annotations-file={annotations}",
            ],
            log_path=self.workdir / f"{name}.log",
        )
        pod = DemoPod(
            name=name,
            color=color,
            labels=labels,
            process=process,
            annotations_file=annotations,
        )
        pod.starting = asyncio.create_task(self._wait_listening(pod), name=f"start {name}")
        return pod

    async def _wait_listening(self, pod: DemoPod) -> None:
        # The app binds port 0 and logs the ports it got: no race for a free port.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LISTEN_TIMEOUT
        offset = pod.process.log_path.stat().st_size if pod.process.log_path.exists() else 0
        pod.process.start()
        try:
            while True:
                listening = _listening_entry(pod.process.log_path, offset)
                if listening is not None:
                    pod.http_port = int(listening["http_port"])
                    pod.tcp_port = int(listening["tcp_port"])
                    break
                if not pod.process.running():
                    log.error("demo process failed", pod=pod.name, log=str(pod.process.log_path))
                    return
                if loop.time() > deadline:
                    log.error("demo process not listening", pod=pod.name, timeout=LISTEN_TIMEOUT)
                    return
                await asyncio.sleep(0.05)
        finally:
            pod.starting = None
        self._set_targets()
        log.debug(
            "pod serving",
            pod=pod.name,
            color=pod.color,
            http=pod.http_url,
            tcp=pod.tcp_address,
            pid=pod.process.pid,
        )
        self._changed(pod, "serving")

    async def _stop(self, pod: DemoPod) -> None:
        if pod.starting is not None:
            pod.starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pod.starting
        was_serving = pod.serving
        # A stop once begun is seen through and told, even when the sandbox is stopped meanwhile
        # (the pod has already left `pods`: stop_all would not tell it).
        stopping = asyncio.ensure_future(asyncio.to_thread(pod.process.stop))
        cancelled = False
        while not stopping.done():
            try:
                await asyncio.shield(stopping)
            except asyncio.CancelledError:
                cancelled = True
        stopping.result()  # its error, if it failed
        self._set_targets()
        if was_serving:
            log.debug("pod stopped", pod=pod.name, color=pod.color)
            self._changed(pod, "stopped")
        if cancelled:
            raise asyncio.CancelledError

    async def stop_all(self) -> None:
        pods = list(self.pods.values())
        self.pods.clear()
        await asyncio.gather(*(self._stop(pod) for pod in pods))

    def _changed(self, pod: DemoPod, event: str) -> None:
        if self.on_change is not None:
            self.on_change(pod, event)

    def _set_targets(self) -> None:
        # The gauge itself carries namespace, app and color; the target adds only the pod, so
        # no label of the scraped series gets renamed to exported_*.
        self.prometheus.set_targets(
            [(f"127.0.0.1:{pod.http_port}", {"pod": pod.name}) for pod in self.serving()],
            job=PROMETHEUS_JOB,
        )

    def _write_annotations(self, pod: DemoPod, annotations: Mapping[str, str]) -> None:
        text = downward_annotations(annotations)
        with contextlib.suppress(FileNotFoundError):
            if pod.annotations_file.read_text() == text:
                return
        tmp = pod.annotations_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(pod.annotations_file)


def _listening_entry(path: Path, offset: int) -> dict[str, Any] | None:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("msg") == "demo app listening":
                return entry
    return None
