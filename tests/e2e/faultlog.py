"""The fault suite's witness and ledger: what rainbowd did to the cluster during a fault test,
judged without asking rainbowd, and the summary printed at the end of the run.

`Witness` watches the test namespace's Services and Deployments with the test's own client and
keeps every version it saw with the time it saw it. rainbowd's actions come from the apiserver's
audit log: a successful PATCH of `deployments/scale` (rainbowd only ever scales to 0) or DELETE
of a Deployment, sent with rainbowd's User-Agent. Each action is then judged against what the
witness saw at the moment the apiserver received it:

- a color selected by a Service (a non-empty selector that is a subset of its pod-template
  labels) is live; one never selected and created after its app's newest live color is pending;
  an app with no live color is blocked: touching any of these is wrongful;
- a Deployment annotated `rainbowd.io/protect` with anything but an explicit false is protected;
- a Deployment whose pod template has no color label is not a color at all;
- a color the test holds a client connection on is holding connections (the policies here have no
  forced rules, unless the test says so);
- a test may also declare a color hands-off for a window (a user scaling it back up).

The ledger gathers, per fault, when it was injected and cleared, the actions taken meanwhile and
how long the cluster took to reach the expected state again; `tests/e2e/conftest.py` prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.objects import parse_time
from rainbowd.kube.clients import KubeError, open_stream, request_json, resource_path
from rainbowd_sandbox.controlplane import ControlPlane
from tests.demoapps import DemoApp
from tests.e2e.harness import held_connection

PROTECT = "rainbowd.io/protect"
# Spellings of "no" that leave a Deployment unprotected; anything else non-empty protects it.
_NOT_PROTECTED = {"", "false", "no", "off", "0", "n", "f"}
WATCHED = {
    "services": ("v1", "services"),
    "deployments": ("apps/v1", "deployments"),
}


@dataclass(frozen=True)
class Action:
    """One scale-to-0 or delete rainbowd made, as the apiserver recorded it."""

    kind: str  # "scale" or "delete"
    name: str
    at: float  # when the apiserver received it (epoch seconds)
    code: int


@dataclass(frozen=True)
class Wrongful:
    action: Action
    why: str

    def __str__(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.gmtime(self.action.at))
        return f"{self.action.kind} {self.action.name} at {stamp}: {self.why}"


@dataclass
class FaultRecord:
    name: str
    test: str
    injected_at: float
    cleared_at: float | None = None
    converged_at: float | None = None
    names: frozenset[str] = frozenset()
    """The Deployments the fault is about; empty: every action until the next fault counts."""
    actions: int = 0
    wrongful: list[Wrongful] = field(default_factory=list)

    @property
    def reconverge(self) -> float | None:
        if self.converged_at is None:
            return None
        return max(0.0, self.converged_at - (self.cleared_at or self.injected_at))


NO_FAULT = "(no fault)"
"""The ledger row of a test that injects no fault but has a witness judge the daemon's actions."""


class Ledger:
    """Every fault of the session, in the order injected."""

    def __init__(self) -> None:
        self.faults: list[FaultRecord] = []

    @property
    def wrongful(self) -> list[Wrongful]:
        return [w for f in self.faults for w in f.wrongful]

    def rows(self) -> list[dict[str, Any]]:
        """The summary's rows, JSON-able: an xdist worker sends them to the controller."""
        return [
            {
                "name": f.name,
                "test": f.test,
                "injected_at": f.injected_at,
                "actions": f.actions,
                "reconverge": f.reconverge,
                "wrongful": [str(w) for w in f.wrongful],
            }
            for f in self.faults
        ]


def ledger_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The fault suite's summary: one line per fault (rows of `Ledger.rows`), then the totals."""
    width = max([len(r["name"]) for r in rows] + [5])
    out = [f"{'fault':<{width}}  actions  wrongful  re-converge  test"]
    for r in rows:
        took = f"{r['reconverge']:.1f}s" if r["reconverge"] is not None else "-"
        test = r["test"].rsplit("::", 1)[-1]
        row = f"{r['name']:<{width}}  {r['actions']:>7}  {len(r['wrongful']):>8}  {took:>11}"
        out.append(f"{row}  {test}")
    injected = [r for r in rows if r["name"] != NO_FAULT]
    wrongful = [w for r in rows for w in r["wrongful"]]
    out.append(
        f"{len(injected)} faults injected, {sum(r['actions'] for r in rows)} actions "
        f"taken, {len(wrongful)} wrongful"
    )
    out.extend(f"WRONGFUL: {w}" for w in wrongful)
    return out


LEDGER = Ledger()


def audited_actions(cluster: ControlPlane, namespace: str) -> list[Action]:
    """rainbowd's scale-downs and deletes of Deployments in `namespace`, from the audit log
    (failed attempts included, with their status code)."""
    out = []
    for event in cluster.audit_events():
        ref = event.get("objectRef") or {}
        if not str(event.get("userAgent", "")).startswith("rainbowd/"):
            continue
        if ref.get("namespace") != namespace or ref.get("resource") != "deployments":
            continue
        verb, sub = event.get("verb"), ref.get("subresource")
        if verb == "patch" and sub == "scale":
            kind = "scale"
        elif verb == "delete" and not sub:
            kind = "delete"
        else:
            continue
        out.append(
            Action(
                kind=kind,
                name=str(ref.get("name")),
                at=parse_time(event["requestReceivedTimestamp"]).timestamp(),
                code=int((event.get("responseStatus") or {}).get("code", 0)),
            )
        )
    return sorted(out, key=lambda a: a.at)


def _template_labels(deployment: dict[str, Any]) -> dict[str, str]:
    spec = deployment.get("spec") or {}
    return dict(((spec.get("template") or {}).get("metadata") or {}).get("labels") or {})


def _selects(service: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = (service.get("spec") or {}).get("selector") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Witness:
    """Watches one namespace's Services and Deployments; judges rainbowd's actions there."""

    def __init__(
        self,
        api: ApiClient,
        cluster: ControlPlane,
        namespace: str,
        test: str,
        *,
        app_label: str = "app",
        color_label: str = "color",
    ) -> None:
        self.api = api
        self.cluster = cluster
        self.namespace = namespace
        self.test = test
        self.app_label = app_label
        self.color_label = color_label
        # (kind, name) -> [(seen at, object or None when deleted)]
        self.history: dict[tuple[str, str], list[tuple[float, dict[str, Any] | None]]] = {}
        self.synced = {kind: asyncio.Event() for kind in WATCHED}
        self.holding: dict[str, list[tuple[float, float | None]]] = {}
        self.hands_off: list[tuple[str, float, float | None, str]] = []
        self.forced_ok: set[str] = set()
        self.faults: list[FaultRecord] = []
        self.created_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._checked = False

    # -- watching --------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch(kind)) for kind in WATCHED]
        for event in self.synced.values():
            await asyncio.wait_for(event.wait(), 60)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _record(self, kind: str, name: str, obj: dict[str, Any] | None) -> None:
        versions = self.history.setdefault((kind, name), [])
        if versions and versions[-1][1] == obj:
            return
        versions.append((time.time(), obj))

    async def _watch(self, kind: str) -> None:
        group_version, plural = WATCHED[kind]
        path = resource_path(group_version, plural, namespace=self.namespace)
        while True:
            try:
                listing = await request_json(self.api, "GET", path)
                seen = {}
                for item in listing.get("items") or []:
                    seen[item["metadata"]["name"]] = item
                for (k, name), versions in list(self.history.items()):
                    if k == kind and versions[-1][1] is not None and name not in seen:
                        self._record(kind, name, None)
                for name, item in seen.items():
                    self._record(kind, name, item)
                self.synced[kind].set()
                version = listing["metadata"]["resourceVersion"]
                while True:
                    version = await self._stream(kind, path, version)
            except (KubeError, aiohttp.ClientError, OSError, ValueError, TimeoutError):
                # The apiserver restarting, etcd compacted, a stream cut: list again.
                await asyncio.sleep(0.2)

    async def _stream(self, kind: str, path: str, version: str) -> str:
        resp = await open_stream(
            self.api,
            "GET",
            path,
            query={"watch": 1, "resourceVersion": version, "timeoutSeconds": 120},
            request_timeout=aiohttp.ClientTimeout(total=None, sock_read=150),
        )
        try:
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise ValueError(f"watch error: {obj.get('message')}")
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if event.get("type") == "BOOKMARK":
                    continue
                name = obj["metadata"]["name"]
                self._record(kind, name, None if event["type"] == "DELETED" else obj)
        finally:
            resp.release()
        return version

    def at(self, kind: str, name: str, when: float) -> dict[str, Any] | None:
        found = None
        for seen, obj in self.history.get((kind, name), []):
            if seen > when:
                break
            found = obj
        return found

    def objects_at(self, kind: str, when: float) -> list[dict[str, Any]]:
        out = []
        for k, name in self.history:
            if k == kind and (obj := self.at(kind, name, when)) is not None:
                out.append(obj)
        return out

    def deployment(self, name: str) -> dict[str, Any] | None:
        """The latest version of a Deployment the witness saw."""
        versions = self.history.get(("deployments", name)) or [(0.0, None)]
        return versions[-1][1]

    # -- what the test declares ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def holding_connection(self, demo: DemoApp, name: str) -> AsyncIterator[None]:
        """A client connection on the color `name` (a Deployment): any action on it meanwhile
        is wrongful (the policies of the fault suite have no forced rules)."""
        async with held_connection(demo):
            with self.holding_clients(name):
                yield

    @contextlib.contextmanager
    def holding_clients(self, name: str) -> Iterator[None]:
        """The color `name` holds clients the test opened itself: any action on it meanwhile
        is wrongful."""
        spans = self.holding.setdefault(name, [])
        mine = len(spans)  # its own span: connections may close in any order
        spans.append((time.time(), None))
        try:
            yield
        finally:
            spans[mine] = (spans[mine][0], time.time())

    def hands_off_from(self, name: str, why: str) -> int:
        """Declares `name` hands-off from now on, until `end_hands_off`; returns a handle."""
        self.hands_off.append((name, time.time(), None, why))
        return len(self.hands_off) - 1

    def end_hands_off(self, handle: int) -> None:
        name, start, _, why = self.hands_off[handle]
        self.hands_off[handle] = (name, start, time.time(), why)

    def injected(self, name: str, names: tuple[str, ...] = ()) -> FaultRecord:
        """Records a fault injected now; `cleared()` when it is taken away, `converged()` when
        the cluster reached the expected state again."""
        record = FaultRecord(
            name=name, test=self.test, injected_at=time.time(), names=frozenset(names)
        )
        self.faults.append(record)
        return record

    @staticmethod
    def cleared(record: FaultRecord) -> None:
        record.cleared_at = time.time()

    @contextlib.contextmanager
    def fault(self, name: str, names: tuple[str, ...] = ()) -> Iterator[FaultRecord]:
        """The fault is injected on entry and cleared on exit."""
        record = self.injected(name, names)
        try:
            yield record
        finally:
            self.cleared(record)

    @staticmethod
    def converged(record: FaultRecord) -> None:
        if record.converged_at is None:
            record.converged_at = time.time()

    # -- judging ---------------------------------------------------------------------------

    def actions(self) -> list[Action]:
        return audited_actions(self.cluster, self.namespace)

    def applied(self) -> list[Action]:
        return [a for a in self.actions() if 200 <= a.code <= 299]

    def judge(self, action: Action) -> str | None:
        t = action.at
        dep = self.at("deployments", action.name, t)
        if dep is None:
            return "a Deployment the witness never saw"
        labels = _template_labels(dep)
        annotations = dep["metadata"].get("annotations") or {}
        if self.color_label not in labels:
            return "no color label on its pod template"
        if str(annotations.get(PROTECT, "")).strip().lower() not in _NOT_PROTECTED:
            return f"protected ({PROTECT}: {annotations[PROTECT]!r})"
        services = self.objects_at("services", t)
        live = [s["metadata"]["name"] for s in services if _selects(s, labels)]
        if live:
            return f"live: selected by Service {', '.join(live)}"
        app = labels.get(self.app_label)
        live_created = [
            parse_time(d["metadata"]["creationTimestamp"])
            for d in self.objects_at("deployments", t)
            if _template_labels(d).get(self.app_label) == app
            and _template_labels(d).get(self.color_label)
            and any(_selects(s, _template_labels(d)) for s in services)
        ]
        if not live_created:
            return f"app {app!r} had no live color"
        times = sorted(
            {seen for versions in self.history.values() for seen, _ in versions if seen <= t}
        )
        ever_live = any(
            _selects(s, labels) for seen in times for s in self.objects_at("services", seen)
        )
        if not ever_live and parse_time(dep["metadata"]["creationTimestamp"]) > max(live_created):
            return "pending: created after the live color and never live"
        for start, end in self.holding.get(action.name, []):
            if start <= t and (end is None or t < end) and action.name not in self.forced_ok:
                return "holding a client connection"
        for name, start, end, why in self.hands_off:
            if name == action.name and start <= t and (end is None or t < end):
                return why
        return None

    def verdicts(self) -> list[Wrongful]:
        out = []
        for action in self.applied():
            why = self.judge(action)
            if why is not None:
                out.append(Wrongful(action, why))
        return out

    def timeline(self) -> list[str]:
        """What the witness saw and what rainbowd did, in order: shown when a test fails."""
        lines = []
        for (kind, name), versions in self.history.items():
            for seen, obj in versions:
                if obj is None:
                    lines.append((seen, f"{kind}/{name} deleted"))
                elif kind == "services":
                    selector = (obj.get("spec") or {}).get("selector")
                    lines.append((seen, f"{kind}/{name} selector {selector}"))
        for a in self.actions():
            lines.append((a.at, f"rainbowd {a.kind} {a.name} -> {a.code}"))
        for r in self.faults:
            lines.append((r.injected_at, f"fault injected: {r.name}"))
        return [
            time.strftime("%H:%M:%S", time.gmtime(t)) + f"{t % 1:.3f}"[1:] + f" {text}"
            for t, text in sorted(lines)
        ]

    def check(self) -> list[Wrongful]:
        """Judges every action of the test, files the faults in the ledger (once), and returns
        the wrongful actions."""
        applied = self.applied()
        wrongful = self.verdicts()
        print("witness timeline:\n" + "\n".join(self.timeline()))
        if not self._checked:
            self._checked = True
            # A test that injects nothing still has every action judged: one row for all of
            # them, from the witness's start, not counted as a fault.
            faults = self.faults or [
                FaultRecord(name=NO_FAULT, test=self.test, injected_at=self.created_at)
            ]
            timed = [f for f in faults if not f.names]
            starts = [f.injected_at for f in timed[1:]] + [float("inf")]
            ends = {id(f): end for f, end in zip(timed, starts, strict=False)}
            for record in faults:
                if record.names:
                    mine = [
                        a for a in applied if a.name in record.names and a.at >= record.injected_at
                    ]
                    bad = [w for w in wrongful if w.action.name in record.names]
                else:
                    end = ends[id(record)]
                    mine = [a for a in applied if record.injected_at <= a.at < end]
                    bad = [w for w in wrongful if record.injected_at <= w.action.at < end]
                record.actions = len(mine)
                record.wrongful = bad
            # A wrongful action no fault accounts for still counts against the test.
            counted = {id(w) for f in faults for w in f.wrongful}
            faults[0].wrongful.extend(w for w in wrongful if id(w) not in counted)
            LEDGER.faults.extend(faults)
        return wrongful

    def assert_no_wrongful(self) -> None:
        wrongful = self.check()
        assert not wrongful, "wrongful actions:\n" + "\n".join(str(w) for w in wrongful)
