"""One soak: the control plane, Prometheus, two rainbowd replicas behind a proxy that cuts their
streams, churn until the time is up, a witness per namespace, and the figures at the end.

Churn is one step at a time, drawn from a seeded random generator: apps created with `rainbowd
deploy` (a namespace each), new colors deployed, rollbacks, Services switched by hand,
connections opened and closed on the colors' demo_app processes, policy edits valid and invalid,
apps and namespaces deleted under rainbowd, the leader killed (first half) or the standby (second
half: the replicas alive then are the ones measured over the second half).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.history import HistoryLimits
from rainbowd.kube.clients import KubeError, NotFound, make_api_client, request_json, resource_path
from rainbowd_sandbox.procs import Process, free_port
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.demoapps import DemoApp
from tests.e2e.faultlog import LEDGER, FaultRecord, Ledger, Witness, Wrongful, ledger_lines
from tests.e2e.harness import (
    ROOT,
    deployment_path,
    lease_holder,
    point_service,
    put_configmap,
)
from tests.soak.cluster import SoakControlPlane
from tests.soak.figures import (
    Sample,
    Series,
    counters,
    metrics_figures,
    over_limit,
    process_figures,
    rows,
    table,
)
from tests.tcpproxy import TcpProxy

SYSTEM = "rainbowd-system"
POLICY = "rainbowd-policy"
MAX_APPS = 3
MAX_COLORS = 3  # colors with a demo_app (a pod) per app: the machine has two cores
STEP_PAUSE = (0.5, 2.0)  # seconds between churn steps
CANARY = 0.2  # deploys that leave the Service selecting every color, narrowed later by hand
CUT_EVERY = (5.0, 15.0)  # seconds between two cuts of every rainbowd connection
KILL_EVERY = 0.1  # a replica killed every this fraction of the run
CLI_TIMEOUT = 120.0
INTERVAL = 0.2
"""Seconds between rainbowd's cycles (`--interval`): 30 minutes are about as many cycles as three
days at 30 s."""
STRUCTURE_SLACK = 200
"""Entries any structure may hold beyond what the cluster's objects explain (the short soak's
generous threshold): a structure that grows per cycle passes it within the first minute."""

TEMPLATE = textwrap.dedent(
    """\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: APP-__COLOR__
      labels: {app: APP}
    spec:
      replicas: 1
      selector: {matchLabels: {app: APP, color: __COLOR__}}
      template:
        metadata: {labels: {app: APP, color: __COLOR__}}
        spec:
          containers: [{name: app, image: registry.invalid/chat:1}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: APP}
    spec:
      selector: {app: APP, color: __COLOR__}
      ports: [{port: 80, targetPort: 8080}]
    """
)


def policy_text(prometheus_url: str, *, drain_hold: str = "2s", valid: bool = True) -> str:
    floor = "0" if valid else '"ten"'
    return textwrap.dedent(
        f"""\
        apiVersion: rainbowd.io/v1alpha1
        kind: DrainPolicy
        prometheus: {{url: "{prometheus_url}", timeout: 2s}}
        connections: {{metric: rainbow_open_connections}}
        defaults:
          minRetiredAge: 3s
          drainHold: {drain_hold}
          connectionFloor: {floor}
          maxColors: null
          maxRetiredAge: null
          action: scale-then-delete
          keepScaledDown: 1
        rules:
          - name: soak
            selector: app
        """
    )


@dataclass
class App:
    namespace: str
    name: str
    witness: Witness
    colors: list[str] = field(default_factory=list)  # deployed, oldest first
    demos: dict[str, DemoApp] = field(default_factory=dict)
    held: dict[str, list[contextlib.AsyncExitStack]] = field(default_factory=dict)


@dataclass
class Replica:
    identity: str
    process: Process
    port: int
    series: Series


@dataclass
class Outcome:
    """What a soak found: the text printed, and what fails it."""

    report: list[str]
    wrongful: list[str]
    over_limit: list[str]
    series: list[Series]
    tally: dict[str, float]
    actions: int
    """rainbowd's scale-downs and deletes that the apiserver applied."""

    @property
    def ok(self) -> bool:
        return not self.wrongful and not self.over_limit


class Soak:
    def __init__(
        self,
        *,
        minutes: float,
        seed: int,
        sample_every: float,
        workdir: Path,
        interval: float,
        step_pause: tuple[float, float],
    ) -> None:
        self.minutes = minutes
        self.interval = interval
        self.step_pause = step_pause
        self.seconds = minutes * 60.0
        self.rng = random.Random(seed)
        self.seed = seed
        self.sample_every = sample_every
        self.workdir = workdir
        self.cluster = SoakControlPlane(full=True)
        self.prometheus = PrometheusServer(scrape_interval=1.0)
        self.api: ApiClient | None = None
        self.proxy: TcpProxy | None = None
        self.replicas: list[Replica] = []
        self.ended: list[Replica] = []
        self.apps: list[App] = []
        self.witnesses: list[Witness] = []
        self.began = 0.0
        self.steps: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.peak_objects = 0
        self.leader_seen: list[str] = []
        self._serial = 0
        self._judged: list[Witness] = []
        self._wrongful: list[Wrongful] = []
        self._ledger = Ledger()  # this soak's rows of the fault suite's ledger
        self._kubeconfig = workdir / "rainbowd-kubeconfig"

    # -- the whole run -----------------------------------------------------------------------

    async def run(self) -> Outcome:
        await asyncio.to_thread(self.cluster.start)
        try:
            await asyncio.to_thread(self.prometheus.start)
            self.api = await make_api_client(kubeconfig=str(self.cluster.kubeconfig))
            # The soak's own writes (deleting apps) must not pass for rainbowd's in the audit.
            self.api.user_agent = "rainbowd-soak"
            self.proxy = TcpProxy(int(self.cluster.server.rsplit(":", 1)[1]))
            await self.proxy.start()
            self._write_kubeconfig(self.proxy.port)
            await self._create_namespace(SYSTEM)
            await put_configmap(self.api, SYSTEM, POLICY, policy_text(self.prometheus.url))
            self.began = time.monotonic()
            for _ in range(2):
                self._start_replica()
            background = [
                asyncio.create_task(self._every(self._sample, self.sample_every)),
                asyncio.create_task(self._cuts()),
                asyncio.create_task(self._every(self._watch_lease, 1.0)),
            ]
            try:
                await self._churn()
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
            await self._sample()
            return await self._finish()
        finally:
            await self._teardown()

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    async def _every(self, fn: Callable[[], Awaitable[None]], period: float) -> None:
        while True:
            with contextlib.suppress(OSError, aiohttp.ClientError, KubeError, TimeoutError):
                await fn()
            await asyncio.sleep(period)

    async def _cuts(self) -> None:
        """Every rainbowd connection cut now and then: each watch ends and resumes from its
        last version, which etcd may have compacted meanwhile (410 Gone, a re-list)."""
        assert self.proxy is not None
        while True:
            await asyncio.sleep(self.rng.uniform(*CUT_EVERY))
            self.proxy.cut()
            self.proxy.resume()
            self._count("streams cut")

    # -- churn -------------------------------------------------------------------------------

    async def _churn(self) -> None:
        kills = 0
        while self.elapsed() < self.seconds:
            if self.elapsed() > (kills + 1) * KILL_EVERY * self.seconds:
                kills += 1
                await self._step("replica killed", self._kill_replica())
            else:
                name, step = self._choose()
                await self._step(name, step)
            await self._reap_scaled_down()
            await asyncio.sleep(self.rng.uniform(*self.step_pause))

    def _choose(self) -> tuple[str, Awaitable[None]]:
        apps = self.apps
        choices: list[tuple[str, float, Callable[[], Awaitable[None]]]] = [
            ("app created", 3.0 if len(apps) < MAX_APPS else 0.0, self._create_app),
            ("color deployed", 4.0 if apps else 0.0, self._deploy_color),
            ("rolled back", 1.5 if apps else 0.0, self._rollback),
            ("service narrowed", 1.5 if apps else 0.0, self._switch_service),
            ("connection opened", 3.0 if apps else 0.0, self._open_connection),
            ("connection closed", 3.0 if any(a.held for a in apps) else 0.0, self._close),
            ("policy edited", 1.0, self._edit_policy),
            ("policy invalid", 0.5, self._invalid_policy),
            ("app deleted", 0.7 if len(apps) > 1 else 0.0, self._delete_app),
            ("namespace deleted", 0.7 if len(apps) > 1 else 0.0, self._delete_namespace),
        ]
        weights = [w for _, w, _ in choices]
        name, _, fn = self.rng.choices(choices, weights=weights)[0]
        return name, fn()

    async def _step(self, name: str, step: Awaitable[None]) -> None:
        try:
            await step
        except (OSError, aiohttp.ClientError, KubeError, TimeoutError, RuntimeError) as exc:
            self.failures[f"{name}: {type(exc).__name__}"] = (
                self.failures.get(f"{name}: {type(exc).__name__}", 0) + 1
            )
        else:
            self._count(name)

    def _count(self, name: str) -> None:
        self.steps[name] = self.steps.get(name, 0) + 1

    def _fault(self, name: str) -> list[FaultRecord]:
        return [w.injected(name) for w in self.witnesses]

    async def _create_app(self) -> None:
        assert self.api is not None
        self._serial += 1
        namespace = f"soak-{self._serial}-{secrets.token_hex(2)}"
        await self._create_namespace(namespace)
        witness = Witness(self.api, self.cluster, namespace, f"soak::{namespace}")
        await witness.start()
        self.witnesses.append(witness)
        app = App(namespace=namespace, name=f"app{self._serial}", witness=witness)
        self.apps.append(app)
        await self._deploy(app)

    async def _deploy_color(self) -> None:
        app = self.rng.choice(self.apps)
        if len(app.demos) >= MAX_COLORS:
            return
        if await self._live(app) is None:
            await self._cli("promote", app)  # a canary in progress: a deploy would be refused
            return
        await self._deploy(app)

    async def _deploy(self, app: App) -> None:
        color = secrets.token_hex(3)
        template = self.workdir / f"{app.namespace}-{color}.yaml"
        template.write_text(TEMPLATE.replace("APP", app.name))
        await self._start_demo(app, color)  # the pod's stand-in, reporting before it is live
        canary = ("--canary",) if app.colors and self.rng.random() < CANARY else ()
        try:
            await self._cli(
                "deploy", app, "-f", str(template), f"--color={color}", "--timeout=90s", *canary
            )
        except RuntimeError:
            await asyncio.to_thread(app.demos.pop(color).close)
            self._targets()
            raise
        app.colors.append(color)
        self._objects()

    async def _rollback(self) -> None:
        app = self.rng.choice(self.apps)
        if len(app.colors) < 2:
            return
        await self._cli("rollback", app, "--timeout=90s")
        live = await self._live(app)
        if live is not None:
            await self._start_demo(app, live)

    async def _switch_service(self) -> None:
        """A canary's Service narrowed to its newest color, by `rainbowd promote` or by a user's
        hand. Only narrowing: a
        hand switch to a retired color races the daemon's scale-down of it (`rainbowd
        rollback` holds the color first, a bare selector edit cannot)."""
        assert self.api is not None
        app = self.rng.choice(self.apps)
        if await self._live(app) is not None or not app.colors:
            return
        newest = app.colors[-1]
        if self.rng.random() < 0.5:
            await self._cli("promote", app)
        elif await self._replicas(app, newest):
            await point_service(self.api, app.namespace, newest, app=app.name)

    async def _open_connection(self) -> None:
        """A client connected to a live color (a retired one may be scaled down meanwhile);
        the witness then calls any action on it wrongful until it is closed."""
        assert self.api is not None
        app = self.rng.choice(self.apps)
        live = await self._live(app)
        if live is None or live not in app.demos or not await self._replicas(app, live):
            return
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(
            app.witness.holding_connection(app.demos[live], f"{app.name}-{live}")
        )
        app.held.setdefault(live, []).append(stack)
        want = len(app.held[live])
        # Until Prometheus has it, rainbowd cannot know: no other step before that.
        await self._until_scraped(app, live, want)

    async def _close(self) -> None:
        app = self.rng.choice([a for a in self.apps if a.held])
        color = self.rng.choice(sorted(app.held))
        stacks = app.held[color]
        await stacks.pop().aclose()
        if not stacks:
            del app.held[color]

    async def _edit_policy(self) -> None:
        assert self.api is not None
        hold = self.rng.choice(["1s", "2s", "3s"])
        await put_configmap(
            self.api, SYSTEM, POLICY, policy_text(self.prometheus.url, drain_hold=hold)
        )

    async def _invalid_policy(self) -> None:
        """An invalid edit, then a valid one a moment later: the last good policy meanwhile."""
        assert self.api is not None
        records = self._fault("policy invalid")
        await put_configmap(self.api, SYSTEM, POLICY, policy_text(self.prometheus.url, valid=False))
        await asyncio.sleep(self.rng.uniform(1.0, 4.0))
        await put_configmap(self.api, SYSTEM, POLICY, policy_text(self.prometheus.url))
        for record in records:
            Witness.cleared(record)

    async def _delete_app(self) -> None:
        """The app's Deployments and Service deleted by a user; its namespace stays a while."""
        assert self.api is not None
        app = self.rng.choice(self.apps)
        await self._drop(app)
        for color in app.colors:
            with contextlib.suppress(NotFound):
                await request_json(
                    self.api, "DELETE", deployment_path(app.namespace, f"{app.name}-{color}")
                )
        with contextlib.suppress(NotFound):
            await request_json(
                self.api,
                "DELETE",
                resource_path("v1", "services", namespace=app.namespace, name=app.name),
            )
        await self._delete_namespace_later(app.namespace)

    async def _delete_namespace(self) -> None:
        """The whole namespace deleted under rainbowd, Deployments and all."""
        app = self.rng.choice(self.apps)
        await self._drop(app)
        await self._delete_namespace_later(app.namespace)

    async def _drop(self, app: App) -> None:
        self.apps.remove(app)
        for stacks in app.held.values():
            for stack in stacks:
                await stack.aclose()
        app.held.clear()
        await self._judge(app.witness)
        for demo in app.demos.values():
            await asyncio.to_thread(demo.close)
        app.demos.clear()
        self._targets()

    async def _delete_namespace_later(self, namespace: str) -> None:
        assert self.api is not None
        with contextlib.suppress(NotFound):
            await request_json(self.api, "DELETE", f"/api/v1/namespaces/{namespace}")

    async def _kill_replica(self) -> None:
        """SIGKILL to the leader in the first half, to the standby in the second (whose
        replicas are the ones measured); a new replica replaces it, as a Deployment would."""
        assert self.api is not None
        holder = await lease_holder(self.api, SYSTEM)
        first_half = self.elapsed() < self.seconds / 2
        targets = [r for r in self.replicas if (r.identity == holder) == first_half]
        if not targets:
            return
        victim = targets[0]
        records = self._fault("leader killed" if first_half else "standby killed")
        pid = victim.process.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(victim.process.stop)
        victim.series.ended = self.elapsed()
        self.replicas.remove(victim)
        self.ended.append(victim)
        self._start_replica()
        for record in records:
            Witness.cleared(record)

    # -- the parts ---------------------------------------------------------------------------

    def _start_replica(self) -> None:
        self._serial += 1
        identity = f"rainbowd-{self._serial}"
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "rainbowd",
            "run",
            f"--kubeconfig={self._kubeconfig}",
            f"--policy-configmap={SYSTEM}/{POLICY}",
            f"--interval={self.interval * 1000:g}ms",
            "--debounce=100ms",
            "--leader-elect",
            f"--lease-namespace={SYSTEM}",
            "--lease-duration=4s",
            "--renew-deadline=3s",
            "--retry-period=1s",
            f"--listen=127.0.0.1:{port}",
            f"--identity={identity}",
            "--log-format=json",
            "--log-level=info",
        ]
        process = Process(identity, argv, log_path=self.workdir / f"{identity}.log", cwd=ROOT)
        process.start()
        series = Series(identity=identity, started=self.elapsed())
        self.replicas.append(Replica(identity, process, port, series))

    async def _sample(self) -> None:
        async with aiohttp.ClientSession() as session:
            for replica in list(self.replicas):
                pid = replica.process.pid
                if pid is None or not replica.process.running():
                    continue
                values = process_figures(pid)
                try:
                    async with session.get(
                        f"http://127.0.0.1:{replica.port}/metrics",
                        timeout=aiohttp.ClientTimeout(total=5),
                    ) as resp:
                        values.update(metrics_figures(await resp.text()))
                except (aiohttp.ClientError, TimeoutError):
                    pass
                replica.series.samples.append(Sample(self.elapsed(), values))

    async def _watch_lease(self) -> None:
        assert self.api is not None
        holder = await lease_holder(self.api, SYSTEM)
        if holder and (not self.leader_seen or self.leader_seen[-1] != holder):
            self.leader_seen.append(holder)

    def _write_kubeconfig(self, port: int) -> None:
        config = yaml.safe_load(self.cluster.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
        self._kubeconfig.write_text(yaml.safe_dump(config))
        self._kubeconfig.chmod(0o600)

    async def _create_namespace(self, name: str) -> None:
        assert self.api is not None
        await request_json(
            self.api, "POST", "/api/v1/namespaces", body={"metadata": {"name": name}}
        )

    async def _cli(self, command: str, app: App, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rainbowd",
            command,
            f"--kubeconfig={self.cluster.kubeconfig}",
            f"--namespace={app.namespace}",
            f"--app={app.name}",
            *args,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(CLI_TIMEOUT):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            with (self.workdir / "cli-failures.log").open("a") as f:
                f.write(f"--- rainbowd {command} {' '.join(args)} -> {proc.returncode}\n")
                f.write(out.decode(errors="replace"))
            raise RuntimeError(f"rainbowd {command} exited {proc.returncode}")

    async def _start_demo(self, app: App, color: str) -> None:
        if color in app.demos:
            return
        demo = DemoApp(color, workdir=self.workdir, app=app.name, namespace=app.namespace)
        app.demos[color] = await asyncio.to_thread(demo.start)
        self._targets()

    def _targets(self) -> None:
        self.prometheus.set_targets([(d.target, {}) for a in self.apps for d in a.demos.values()])

    async def _reap_scaled_down(self) -> None:
        """A color rainbowd scaled down or deleted has no pod left: its demo_app goes too,
        unless a connection is held on it (then the witness has a wrongful action already)."""
        for app in self.apps:
            for color in list(app.demos):
                if color in app.held or await self._replicas(app, color):
                    continue
                await asyncio.to_thread(app.demos.pop(color).close)
                self._targets()
        self._objects()

    def _objects(self) -> None:
        alive = sum(len(a.colors) + 1 for a in self.apps)
        self.peak_objects = max(self.peak_objects, alive)

    async def _replicas(self, app: App, color: str) -> int:
        assert self.api is not None
        try:
            obj = await request_json(
                self.api, "GET", deployment_path(app.namespace, f"{app.name}-{color}")
            )
        except NotFound:
            return 0
        return int(obj["spec"].get("replicas") or 0)

    async def _exists(self, app: App, color: str) -> bool:
        assert self.api is not None
        try:
            await request_json(
                self.api, "GET", deployment_path(app.namespace, f"{app.name}-{color}")
            )
        except NotFound:
            return False
        return True

    async def _live(self, app: App) -> str | None:
        assert self.api is not None
        try:
            service = await request_json(
                self.api,
                "GET",
                resource_path("v1", "services", namespace=app.namespace, name=app.name),
            )
        except NotFound:
            return None
        selector = (service.get("spec") or {}).get("selector") or {}
        color = selector.get("color")
        return str(color) if color else None

    async def _until_scraped(self, app: App, color: str, count: int) -> None:
        expr = f'rainbow_open_connections{{namespace="{app.namespace}",color="{color}"}} >= {count}'
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self.prometheus.query, expr):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"Prometheus did not see {expr}")

    # -- the end -----------------------------------------------------------------------------

    async def _judge(self, witness: Witness) -> None:
        await witness.stop()
        filed = len(LEDGER.faults)
        timeline = io.StringIO()
        with contextlib.redirect_stdout(timeline):
            self._wrongful.extend(witness.check())
        (self.workdir / f"witness-{witness.namespace}.txt").write_text(timeline.getvalue())
        self._ledger.faults.extend(LEDGER.faults[filed:])
        with contextlib.suppress(ValueError):
            self.witnesses.remove(witness)
        self._judged.append(witness)

    async def _finish(self) -> Outcome:
        for app in list(self.apps):
            for stacks in app.held.values():
                for stack in stacks:
                    await stack.aclose()
            app.held.clear()
        for witness in list(self.witnesses):
            await self._judge(witness)
        half = self.seconds / 2
        all_series = [r.series for r in self.ended + self.replicas]
        measured = [s for s in all_series if s.started <= half and s.ended is None]
        limits = {
            ".history.points[*]": HistoryLimits().per_color * (self.peak_objects + 1)
            + STRUCTURE_SLACK
        }
        default = STRUCTURE_SLACK + 10 * self.peak_objects
        too_big = [line for s in all_series for line in over_limit(s, limits, default)]
        wrongful = [str(w) for w in self._wrongful]
        tally = counters(all_series)
        actions = sum(len(w.applied()) for w in self._judged)
        report = [
            f"soak: {self.minutes:g} minutes of {self.interval:g} s cycles, seed {self.seed}, "
            f"{len(all_series)} rainbowd processes, {len(self._judged)} namespaces judged",
            "churn: " + ", ".join(f"{k} {v}" for k, v in sorted(self.steps.items())),
        ]
        if self.failures:
            report.append(
                "churn steps that failed: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items()))
            )
        report.append(
            f"cycles run {tally.get('cycles ok', 0) + tally.get('cycles failed', 0):.0f}, "
            f"failed {tally.get('cycles failed', 0):.0f}; actions taken {actions} "
            f"(rainbowd counted {tally.get('actions', 0):.0f} attempts, bookkeeping included); "
            f"wrongful {len(wrongful)}"
        )
        report.append(
            f"re-lists {tally.get('relists', 0):.0f}, watches (re)opened "
            f"{tally.get('watches', 0):.0f}, watch errors {tally.get('watch errors', 0):.0f}, "
            f"streams cut {self.steps.get('streams cut', 0)}, leader changes "
            f"{max(0, len(self.leader_seen) - 1)}, policy reloads "
            f"{tally.get('policy reloads', 0):.0f} ({tally.get('policy invalid', 0):.0f} invalid)"
        )
        report.extend(self._failed_cycles())
        for series in measured:
            report.append(
                f"{series.identity} (from {series.started:.0f}s, {len(series.samples)} samples; "
                f"slope over the second half, from {half:.0f}s):"
            )
            report.extend("  " + line for line in table(rows(series, half=half)))
        report.extend(ledger_lines(self._ledger.rows()))
        report.extend(f"OVER LIMIT: {line}" for line in too_big)
        return Outcome(report, wrongful, too_big, all_series, tally, actions)

    def _failed_cycles(self) -> list[str]:
        """Why cycles failed, from the replicas' logs (one line per distinct error)."""
        why: dict[str, int] = {}
        for replica in self.ended + self.replicas:
            path = replica.process.log_path
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                if '"cycle failed"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    # The exception's last line: its type and message.
                    text = str(entry.get("exc") or entry.get("error") or "?")
                    key = text.strip().splitlines()[-1][:100]
                    why[key] = why.get(key, 0) + 1
        return [f"  cycle failed {n}x: {k}" for k, n in sorted(why.items(), key=lambda x: -x[1])]

    async def _teardown(self) -> None:
        for app in self.apps:
            for stacks in app.held.values():
                for stack in stacks:
                    with contextlib.suppress(Exception):
                        await stack.aclose()
            for demo in app.demos.values():
                demo.close()
        for witness in self.witnesses:
            await witness.stop()
        for replica in self.replicas:
            await asyncio.to_thread(replica.process.stop)
        if self.proxy is not None:
            await self.proxy.close()
        if self.api is not None:
            await self.api.close()
        self.prometheus.close()
        await asyncio.to_thread(self.cluster.stop)


async def soak(
    minutes: float,
    *,
    seed: int | None = None,
    sample_every: float = 60.0,
    interval: float = INTERVAL,
    step_pause: tuple[float, float] = STEP_PAUSE,
    keep: Path | None = None,
) -> Outcome:
    """Runs a soak of `minutes` with rainbowd's cycles `interval` seconds apart and a pause
    drawn from `step_pause` (seconds) after each churn step; its logs go to `keep` (else a
    temporary folder, removed)."""
    workdir = keep or Path(tempfile.mkdtemp(prefix="rainbowd-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    chosen = seed if seed is not None else random.SystemRandom().randrange(2**32)
    try:
        return await Soak(
            minutes=minutes,
            seed=chosen,
            sample_every=sample_every,
            workdir=workdir,
            interval=interval,
            step_pause=step_pause,
        ).run()
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
