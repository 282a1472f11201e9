"""`rainbowd sandbox`: the whole of rainbowd on one machine. A local control plane, a real
Prometheus, the seed's app with a demo process per ready pod behind a loopback Service, the policy
ConfigMap and the daemon itself; optionally the seed's story played through. Stops it all in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd import deploy as rainbow
from rainbowd.core.policy import PolicyError
from rainbowd.daemon import Daemon
from rainbowd.kube.clients import (
    KubeError,
    NotFound,
    make_api_client,
    request_json,
    resource_path,
)
from rainbowd.logs import get_logger, setup_logging
from rainbowd.policyfile import load_policy_text
from rainbowd.settings import PolicySource, Settings
from rainbowd_sandbox import app as seed
from rainbowd_sandbox.controlplane import ControlPlane, ControlPlaneError, default_binaries_dir
from rainbowd_sandbox.pods import PROMETHEUS_JOB, DemoPod, PodRunner
from rainbowd_sandbox.procs import ProcessError, free_port
from rainbowd_sandbox.prometheus import PrometheusError, PrometheusServer
from rainbowd_sandbox.proxy import ServiceProxy
from rainbowd_sandbox.story import Stage, play
from rainbowd_sandbox.terminal import LiveTable, LogFollower

log = get_logger(__name__)

# Package data, so an installed `rainbowd sandbox` has it; config/sandbox-policy.yaml links to it.
POLICY_FILE = "sandbox-policy.yaml"
POLICY_CONFIGMAP = "rainbowd-policy"
DAEMON_IDENTITY = "rainbowd-sandbox"
# Long enough for the daemon's own bounded shutdown (its shutdown_timeout) and then some.
DAEMON_STOP_TIMEOUT = 20.0
DAEMON_START_TIMEOUT = 60.0


class SandboxError(RuntimeError):
    """The sandbox cannot start or keep running; the message says what failed."""


@dataclass(frozen=True, slots=True)
class SandboxOptions:
    data_dir: Path | None = None
    """Where the control plane, Prometheus and the pods keep their data and logs; kept after
    exit when given. None: a temporary folder, removed at exit."""
    namespace: str = seed.NAMESPACE
    """Namespace of the app, of the policy ConfigMap, and the only one rainbowd manages."""
    replicas: int = 2
    """Replicas per color, as in the seed's app.yaml."""
    daemon_port: int = 0
    """Port of rainbowd's /status and /metrics on 127.0.0.1; 0 picks a free one."""
    service_http_port: int = 0
    """Port of the loopback Service's HTTP side; 0 picks a free one."""
    service_tcp_port: int = 0
    """Port of the loopback Service's TCP stream (telnet); 0 picks a free one."""
    min_retired_age: str | None = None
    """Overrides the sandbox policy's minRetiredAge (30s) when given."""
    drain_hold: str | None = None
    """Overrides the sandbox policy's drainHold (10s) when given."""
    scrape_interval: float = 1.0
    """Seconds between Prometheus scrapes: a closed connection shows within about two."""
    stream_interval: float = 5.0
    """Seconds between color lines on a TCP stream, as in the seed's app."""
    story: bool = False
    """Play the seed's story once everything runs."""
    exit_after_story: bool = False
    """Stop everything once the story ends instead of running on until Ctrl-C."""
    log_level: str = "info"
    verbose: bool = False
    """Show the logs on stderr too, not only in their files: rainbowd's and the sandbox's, and
    the control plane's, Prometheus's and the demo pods' log files followed as they grow."""


def say(text: str = "") -> None:
    """A line for the user, on stdout; logs go to stderr."""
    print(text, flush=True)


def sandbox_policy(
    prometheus_url: str, *, min_retired_age: str | None = None, drain_hold: str | None = None
) -> str:
    """config/sandbox-policy.yaml pointed at the local Prometheus, with the duration overrides;
    validated like any policy, so a bad override fails here with its path."""
    text = resources.files("rainbowd_sandbox").joinpath(POLICY_FILE).read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    document["prometheus"]["url"] = prometheus_url
    if min_retired_age is not None:
        document["defaults"]["minRetiredAge"] = min_retired_age
    if drain_hold is not None:
        document["defaults"]["drainHold"] = drain_hold
    text = yaml.safe_dump(document, sort_keys=False)
    load_policy_text(text, source="sandbox policy")
    return text


class QuietCycles(logging.Filter):
    """Drops the daemon's "cycle finished" line while nothing changes, so a terminal shows each
    change of state and every action, not one identical line a second."""

    def __init__(self) -> None:
        super().__init__()
        self._last: tuple[Any, ...] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "cycle finished":
            return True
        fields = getattr(record, "rainbowd_fields", {})
        key = tuple(
            fields.get(k) for k in ("states", "planned", "actions", "blocked", "prometheus_errors")
        )
        if key == self._last and not fields.get("planned"):
            return False
        self._last = key
        return True


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Sandbox:
    """`start()` (blocking: control plane, Prometheus), `serve()` (async, until stopped or the
    story ends), `stop()`. `run()` does all three with signals handled."""

    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        # First: without binaries (an installed package, no checkout) nothing else is made.
        binaries = default_binaries_dir()
        self._own_data_dir = options.data_dir is None
        self.data_dir = options.data_dir or Path(tempfile.mkdtemp(prefix="rainbowd-sandbox-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Chosen up front so the page's address is the first thing the user reads.
        self.daemon_port = options.daemon_port or free_port()
        self.log_path = self.data_dir / "rainbowd.log"
        self.live_table: LiveTable | None = None
        # --verbose: the other processes' log files, followed onto stderr.
        self.follower = (
            LogFollower(self.followed_logs(), _Stderr().write) if options.verbose else None
        )
        self.controlplane = ControlPlane(
            binaries=binaries, data_dir=self.data_dir / "controlplane", full=True
        )
        self.prometheus = PrometheusServer(
            scrape_interval=options.scrape_interval, data_dir=self.data_dir / "prometheus"
        )
        self.policy_text = ""
        self.policy_configmap = POLICY_CONFIGMAP
        self.pods: PodRunner | None = None
        self.proxy: ServiceProxy | None = None
        self.daemon: Daemon | None = None
        self.api: ApiClient | None = None
        self.stopping: asyncio.Event | None = None

    # --- the whole run ---------------------------------------------------------------------------

    def run(self) -> int:
        """Start, serve, stop; the exit code. SIGINT and SIGTERM stop it in order at any point."""
        # Both, explicitly: a shell starting us in the background has SIGINT ignored.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _interrupt)
        code = 130
        try:
            say(f"rainbowd's live page: {self.page_url}  (it answers once rainbowd has started)")
            say(f"starting the sandbox in {self.data_dir}")
            self._say_logs()
            if self.follower is not None:
                self.follower.start()
            self.start()
            code = asyncio.run(self.serve())
        except KeyboardInterrupt:
            say("interrupted while starting: stopping")
        except (SandboxError, ControlPlaneError, ProcessError, PrometheusError) as exc:
            say(f"error: {exc}")
            code = 1
        finally:
            # The loop's own handlers are gone with it: signals interrupt the stop from here on,
            # and whatever is left dies with this process (every child has PDEATHSIG set).
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, _interrupt)
            self.stop()
        return code

    def start(self) -> None:
        try:
            self.policy_text = sandbox_policy(
                "http://127.0.0.1:9090",
                min_retired_age=self.options.min_retired_age,
                drain_hold=self.options.drain_hold,
            )
        except PolicyError as exc:
            raise SandboxError("; ".join(exc.errors)) from None
        say("starting the control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok")
        self.controlplane.start()
        say("starting Prometheus")
        # The job exists before the start, so adding pods never needs a configuration reload.
        self.prometheus.set_targets([], job=PROMETHEUS_JOB)
        self.prometheus.start()
        self.policy_text = sandbox_policy(
            self.prometheus.url,
            min_retired_age=self.options.min_retired_age,
            drain_hold=self.options.drain_hold,
        )

    def stop(self) -> None:
        say("stopping Prometheus and the control plane")
        self.prometheus.close()
        self.controlplane.stop()
        if self.follower is not None:
            self.follower.stop()
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        say("sandbox stopped")

    # --- serving ---------------------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        self.stopping = stopping = asyncio.Event()

        def on_signal() -> None:
            if not stopping.is_set():
                say("stopping the sandbox")
            stopping.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        tasks: dict[str, asyncio.Task[Any]] = {}
        code = 0
        try:
            code = await self._serve(tasks, stopping)
        except (SandboxError, KubeError, rainbow.DeployError) as exc:
            say(f"error: {exc}")
            code = 1
        finally:
            await self._shutdown(tasks)
        return code

    async def _serve(self, tasks: dict[str, asyncio.Task[Any]], stopping: asyncio.Event) -> int:
        options = self.options
        self.api = api = await make_api_client(kubeconfig=str(self.controlplane.kubeconfig))
        await seed.ensure_namespace(api, options.namespace)
        await self._put_policy(api)

        self.pods = pods = PodRunner(
            api,
            namespace=options.namespace,
            app=seed.APP,
            workdir=self.data_dir / "pods",
            prometheus=self.prometheus,
            on_change=_show_pod,
            interval=options.stream_interval,
        )
        (self.data_dir / "pods").mkdir(parents=True, exist_ok=True)
        tasks["pods"] = asyncio.create_task(pods.run(), name="sandbox pods")
        self.proxy = proxy = ServiceProxy(
            selector=lambda: pods.selector,
            endpoints=pods.serving,
            http_port=options.service_http_port,
            tcp_port=options.service_tcp_port,
        )
        await proxy.start()

        self.daemon = daemon = Daemon(self._daemon_settings())
        tasks["daemon"] = asyncio.create_task(daemon.run(), name="rainbowd")
        await self._until(
            lambda: daemon.http_url is not None and daemon.ready,
            what="rainbowd ready",
            within=DAEMON_START_TIMEOUT,
            tasks=tasks,
        )

        if not options.story and not await _has_colors(api, options.namespace):
            color = seed.new_color()
            say(f"deploying the first color #{color}")
            await self.deploy(color)
        self._banner()
        self.live_table = LiveTable(
            lambda: None if daemon.last_cycle is None else daemon.last_cycle.plan, self.page_url
        )
        self.live_table.start()

        if options.story:
            assert daemon.http_url is not None  # waited for above
            stage = Stage(
                api=api,
                proxy=proxy,
                pods=pods,
                status_url=daemon.http_url,
                namespace=options.namespace,
                replicas=options.replicas,
                policy_text=self.policy_text,
                policy_configmap=self.policy_configmap,
                deploy=self.deploy,
                set_default=self.set_default,
                rollback=self.rollback,
            )
            tasks["story"] = asyncio.create_task(play(stage), name="story")
        waits: dict[str, asyncio.Task[Any]] = {
            "stop": asyncio.create_task(stopping.wait(), name="sandbox stop"),
            **tasks,
        }
        try:
            while True:
                done, _ = await asyncio.wait(waits.values(), return_when=asyncio.FIRST_COMPLETED)
                if waits["stop"] in done:
                    return 0
                if "story" in waits and waits["story"] in done:
                    story = waits.pop("story")
                    tasks.pop("story")
                    if story.exception() is not None:
                        raise SandboxError(f"the story failed: {story.exception()}")
                    if options.exit_after_story:
                        return 0
                    say("the sandbox keeps running; Ctrl-C stops it")
                    continue
                for name in ("daemon", "pods"):
                    if waits[name] in done:
                        raise SandboxError(f"{name} stopped unexpectedly: {_outcome(waits[name])}")
        finally:
            waits["stop"].cancel()

    async def deploy(self, color: str) -> None:
        """`rainbowd deploy` of the color; its check waits for the color's demo processes, so
        the Service never points at a color nobody can connect to yet."""
        assert self.api is not None
        options = self.options
        request = seed.deploy_request(options.namespace, color, replicas=options.replicas)
        await rainbow.deploy(self.api, request, check=self._serving, say=_say_deploy)
        await self._selecting(color)

    async def rollback(self, to: str | None = None) -> str:
        """`rainbowd rollback`: the Service back on the previous color; returns that color."""
        assert self.api is not None
        ref = seed.app_ref(self.options.namespace)
        outcome = await rainbow.rollback(
            self.api,
            ref,
            to=to,
            within=seed.AVAILABLE_TIMEOUT,
            check=self._serving,
            say=_say_rollback,
        )
        await self._selecting(outcome.color)
        return outcome.color

    async def _serving(self, ready: rainbow.ReadyColor) -> None:
        pods = self.pods
        assert pods is not None
        await self._until(
            lambda: len(pods.serving({"color": ready.color})) >= len(ready.pods),
            what=f"the pods of #{ready.color} serving",
            within=seed.AVAILABLE_TIMEOUT,
        )

    async def _selecting(self, color: str) -> None:
        pods = self.pods
        assert pods is not None
        await self._until(
            lambda: pods.selector.get("color") == color,
            what=f"the Service selecting #{color}",
            within=30.0,
        )

    async def _until(
        self,
        check: Callable[[], bool],
        *,
        what: str,
        within: float,
        tasks: dict[str, asyncio.Task[Any]] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not check():
            for name, task in (tasks or {}).items():
                if task.done():
                    raise SandboxError(f"{name} stopped before {what}: {_outcome(task)}")
            if loop.time() > deadline:
                raise SandboxError(f"not {what} after {within:g}s")
            await asyncio.sleep(0.1)

    async def _put_policy(self, api: ApiClient) -> None:
        namespace = self.options.namespace
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": POLICY_CONFIGMAP,
                "labels": {"app.kubernetes.io/name": "rainbowd"},
            },
            "data": {"policy.yaml": self.policy_text},
        }
        path = resource_path("v1", "configmaps", namespace=namespace, name=POLICY_CONFIGMAP)
        try:
            await request_json(api, "PUT", path, body=body)
        except NotFound:
            await request_json(
                api, "POST", resource_path("v1", "configmaps", namespace=namespace), body=body
            )

    async def set_default(self, knob: str, value: Any) -> None:
        """Edits one knob of the policy's defaults in the ConfigMap, as a user would with
        `kubectl edit`; rainbowd picks the change up from its watch."""
        assert self.api is not None
        document: dict[str, Any] = yaml.safe_load(self.policy_text)
        document["defaults"][knob] = value
        text = yaml.safe_dump(document, sort_keys=False)
        load_policy_text(text, source="sandbox policy")
        self.policy_text = text
        await self._put_policy(self.api)

    def _daemon_settings(self) -> Settings:
        return Settings(
            policy=PolicySource(
                configmap_namespace=self.options.namespace, configmap_name=POLICY_CONFIGMAP
            ),
            kubeconfig=str(self.controlplane.kubeconfig),
            namespaces=(self.options.namespace,),
            interval=1.0,
            debounce=0.2,
            listen_host="127.0.0.1",
            listen_port=self.daemon_port,
            leader_elect=False,
            lease_namespace=self.options.namespace,
            identity=DAEMON_IDENTITY,
            log_format="text",
            log_level=self.options.log_level,
        )

    async def _shutdown(self, tasks: dict[str, asyncio.Task[Any]]) -> None:
        """The story, rainbowd, the Service, then the pods: nothing acts on what is gone."""
        if self.live_table is not None:
            self.live_table.stop()
        story = tasks.pop("story", None)
        if story is not None:
            story.cancel()
            await asyncio.gather(story, return_exceptions=True)
        daemon_task = tasks.pop("daemon", None)
        if daemon_task is not None and self.daemon is not None:
            say("stopping rainbowd")
            self.daemon.request_stop()
            try:
                await asyncio.wait_for(daemon_task, DAEMON_STOP_TIMEOUT)
            except TimeoutError:
                log.error("rainbowd did not stop in time", timeout=DAEMON_STOP_TIMEOUT)
            except Exception:
                log.exception("rainbowd failed")
        if self.proxy is not None:
            await self.proxy.close()
        pods_task = tasks.pop("pods", None)
        if pods_task is not None:
            say("stopping the pods' demo processes")
            pods_task.cancel()
            await asyncio.gather(pods_task, return_exceptions=True)
        if self.api is not None:
            await self.api.close()

    # --- what the user reads ---------------------------------------------------------------------

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.daemon_port}/"

    def _say_logs(self) -> None:
        kept = "" if not self._own_data_dir else " (removed at exit; --data-dir keeps them)"
        shown = "shown here too" if self.options.verbose else "--verbose shows them here"
        say(f"logs{kept}; {shown}:")
        control_plane, prometheus, pods = self.followed_logs()
        say(f"  rainbowd and the sandbox: {self.log_path}")
        say(f"  the control plane:        {control_plane}")
        say(f"  Prometheus:               {prometheus}")
        say(f"  the demo pods:            {pods}")

    def followed_logs(self) -> tuple[Path, Path, Path]:
        """The log files of the control plane, Prometheus and the demo pods (globs)."""
        return (
            self.data_dir / "controlplane" / "logs" / "*.log",
            self.data_dir / "prometheus" / "prometheus.log",
            self.data_dir / "pods" / "*.log",
        )

    def _banner(self) -> None:
        assert self.daemon is not None and self.proxy is not None and self.pods is not None
        daemon_url = self.daemon.http_url
        kubeconfig = self.controlplane.kubeconfig
        python = _shown_path(sys.executable)
        ns = self.options.namespace
        say()
        say("rainbowd sandbox is running")
        say(f"  the live page:     {self.page_url}")
        say(f"  export KUBECONFIG={kubeconfig}")
        say(f"  Prometheus:        {self.prometheus.url}/graph?g0.expr=rainbow_open_connections")
        say(f"  rainbowd /status:  {daemon_url}/status")
        say(f"  rainbowd /metrics: {daemon_url}/metrics")
        say(f"  the plan table:    {python} -m rainbowd status --url {daemon_url}")
        say(f"  Service {seed.APP} (namespace {ns}) sends new connections to the live color:")
        say(f"    {self.proxy.http_url}    in a browser")
        say(f"    telnet {self.proxy.tcp_address}    the color stream; keep it open across deploys")
        say("  colors (one demo process per ready pod):")
        for pod in sorted(self.pods.serving(), key=lambda p: p.name):
            say(f"    #{pod.color}  {pod.name}  {pod.http_url}  telnet {pod.tcp_address}")
        if not self.pods.serving():
            say("    none yet: the story deploys them, and each pod is shown as it starts")
        say(
            "  ship a new color from another terminal (Deployment, wait Available, switch Service):"
        )
        say(f"    {python} -m rainbowd sandbox deploy --kubeconfig {kubeconfig} --namespace {ns}")
        say("  or with the kubectl plugin (pip install rainbowd; KUBECONFIG exported as above):")
        say(f"    kubectl rainbow -n {ns} history --app {seed.APP}")
        say(f"    kubectl rainbow -n {ns} rollback --app {seed.APP}")
        say(f"    kubectl rainbow -n {ns} hold COLOR --for 1h --reason 'look at it'")
        say(f"  policy: ConfigMap {ns}/{POLICY_CONFIGMAP} (from config/sandbox-policy.yaml)")
        say("  Ctrl-C stops everything")
        say()


def _say_deploy(text: str) -> None:
    say(f"  rainbowd deploy: {text}")


def _say_rollback(text: str) -> None:
    say(f"  rainbowd rollback: {text}")


def _show_pod(pod: DemoPod, event: str) -> None:
    if event == "serving":
        say(f"pod {pod.name} (#{pod.color}) serving: {pod.http_url}  telnet {pod.tcp_address}")
    else:
        say(f"pod {pod.name} (#{pod.color}) stopped, its connections closed")


def _shown_path(path: str) -> str:
    """A path relative to the working directory when under it: shorter to read and to paste."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


def _outcome(task: asyncio.Task[Any]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return repr(exc) if exc is not None else f"returned {task.result()!r}"


async def _has_colors(api: ApiClient, namespace: str) -> bool:
    listing = await request_json(
        api,
        "GET",
        resource_path("apps/v1", "deployments", namespace=namespace),
        query={"labelSelector": f"app={seed.APP}"},
    )
    return bool(listing.get("items"))


class _Stderr(io.TextIOBase):
    """sys.stderr as it is at each write, so a live table that redirects it stays intact."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def run_sandbox(options: SandboxOptions) -> int:
    """The `rainbowd sandbox` command: the story and a live table on stdout; rainbowd's and the
    sandbox's logs in a file (and on stderr with --verbose; errors always)."""
    try:
        sandbox = Sandbox(options)
    except ControlPlaneError as exc:
        say(f"error: {exc}")
        return 1
    with sandbox_logging(options, sandbox.log_path):
        return sandbox.run()


@contextlib.contextmanager
def sandbox_logging(options: SandboxOptions, path: Path) -> Iterator[None]:
    """Every log line of rainbowd and the sandbox into `path`; on stderr, only errors, or with
    --verbose everything but the repeats of an unchanged "cycle finished"."""
    setup_logging(options.log_level, "text")
    root = logging.getLogger()
    terminal = root.handlers[0]
    assert isinstance(terminal, logging.StreamHandler)
    terminal.setStream(_Stderr())
    terminal.addFilter(QuietCycles())
    if not options.verbose:
        terminal.setLevel(logging.ERROR)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(terminal.formatter)
    root.addHandler(to_file)
    try:
        yield
    finally:
        root.removeHandler(to_file)
        to_file.close()
