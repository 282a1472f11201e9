"""List-then-watch caches of Deployments, Services, Pods, ConfigMaps, what scales a color
(HPAs, PDBs, KEDA ScaledObjects) and Argo Rollouts with their ReplicaSets, kept as small records.

`Informer` owns one resource's store and its LIST/WATCH loop (raw JSON, bookmarks, 410 re-lists,
backoff on dropped streams); `ClusterCache` runs the Deployment and Service informers the daemon
reads each cycle, and on demand one of the colors' pods (only their rainbowd.io/phase mark), so
the executor keeps retired colors' pods marked without listing them. HPAs, PDBs and (when its CRD
is served) ScaledObjects are watched beside them, never waited for: until they are listed,
consolidation is unavailable, and nothing else depends on them. Argo Rollouts (when their CRD is
served) and the ReplicaSets labelled `rollouts-pod-template-hash` are watched like the
Deployments, and each such ReplicaSet of a blueGreen Rollout joins the Deployments as a Rollout
color. In steady state the only requests in flight are the long-running WATCHes.
"""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

import aiohttp
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    PHASE,
    POD_DELETION_COST,
    ROLLOUT_HASH,
    ColorObject,
    Deployment,
    ObjectKind,
    Rollout,
    Service,
)
from rainbowd.core.objects import (
    color_object_from_k8s,
    deployment_from_k8s,
    joined,
    replicaset_from_k8s,
    rollout_from_k8s,
    service_from_k8s,
)
from rainbowd.kube.clients import (
    Gone,
    KubeError,
    NotFound,
    open_stream,
    request_json,
    resource_path,
    status_error,
)
from rainbowd.logs import get_logger

T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name)
OnChange = Callable[[str, Key], None]

log = get_logger(__name__)

# Errors that mean "the connection or the apiserver went away", not "the apiserver said no".
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class Resource:
    group_version: str
    plural: str
    kind: str


DEPLOYMENTS = Resource("apps/v1", "deployments", "Deployment")
PODS = Resource("v1", "pods", "Pod")
SERVICES = Resource("v1", "services", "Service")
CONFIGMAPS = Resource("v1", "configmaps", "ConfigMap")
HPAS = Resource("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
PDBS = Resource("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget")
SCALED_OBJECTS = Resource("keda.sh/v1alpha1", "scaledobjects", "ScaledObject")
REPLICASETS = Resource("apps/v1", "replicasets", "ReplicaSet")
ROLLOUTS = Resource("argoproj.io/v1alpha1", "rollouts", "Rollout")
# The objects that scale a color or guard its pods; optional: a CRD that may not be served.
COLOR_OBJECTS: tuple[tuple[Resource, ObjectKind, bool], ...] = (
    (HPAS, ObjectKind.HPA, False),
    (PDBS, ObjectKind.PDB, False),
    (SCALED_OBJECTS, ObjectKind.SCALED_OBJECT, True),
)
# How often a resource that is not served (KEDA not installed) is looked for again.
ABSENT_RECHECK = 120.0

# Dropped from cached ConfigMaps: managedFields is pure bookkeeping, and kubectl's
# last-applied annotation repeats the whole data a second time.
_DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


@dataclass(frozen=True, slots=True)
class PodMark:
    """A pod of some color, as far as its retired mark and consolidation go: a few strings per
    pod, whatever else the pod carries, so watching every color's pods stays cheap."""

    namespace: str
    name: str
    app: str
    color: str
    phase: str | None  # the rainbowd.io/phase annotation
    # Running, Ready and not terminating: the ReplicaSet controller ranks any other pod first
    # when it scales down, whatever its deletion cost.
    ready: bool = False
    cost: str | None = None  # the controller.kubernetes.io/pod-deletion-cost annotation


def pod_mark_converter(app_label: str, color_label: str) -> Callable[[Mapping[str, Any]], PodMark]:
    def convert(obj: Mapping[str, Any]) -> PodMark:
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
            raise ValueError("Pod without metadata.name")
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        if not isinstance(labels, Mapping) or not isinstance(annotations, Mapping):
            raise ValueError("Pod labels or annotations are not mappings")
        phase = annotations.get(PHASE)
        cost = annotations.get(POD_DELETION_COST)
        return PodMark(
            namespace=str(meta.get("namespace") or "default"),
            name=meta["name"],
            app=str(labels.get(app_label, "")),
            color=str(labels.get(color_label, "")),
            phase=phase if isinstance(phase, str) else None,
            ready=_pod_ready(obj),
            cost=cost if isinstance(cost, str) else None,
        )

    return convert


def _pod_ready(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    status = obj.get("status")
    if meta.get("deletionTimestamp") or not isinstance(status, Mapping):
        return False
    if status.get("phase") != "Running" or not (obj.get("spec") or {}).get("nodeName"):
        return False
    for condition in status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def configmap_from_k8s(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A ConfigMap trimmed to metadata (without managedFields) and data."""
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        raise ValueError("ConfigMap without metadata.name")
    trimmed_meta = {k: v for k, v in meta.items() if k != "managedFields"}
    annotations = trimmed_meta.get("annotations")
    if isinstance(annotations, Mapping):
        trimmed_meta["annotations"] = {
            k: v for k, v in annotations.items() if k not in _DROPPED_ANNOTATIONS
        }
    data = obj.get("data") or {}
    if not isinstance(data, Mapping):
        raise ValueError("ConfigMap data is not a mapping")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": trimmed_meta,
        "data": dict(data),
    }


@dataclass(slots=True)
class InformerStats:
    """Counters exported as metrics; each only grows."""

    lists: int = 0  # completed full LISTs (initial and re-lists)
    list_pages: int = 0  # LIST requests, one per page
    relists: int = 0  # LISTs after the first, forced by 410 Gone or an unexpected failure
    watches: int = 0  # WATCH requests started
    events: int = 0  # ADDED/MODIFIED/DELETED events applied
    bookmarks: int = 0
    errors: int = 0  # failed requests and dropped streams
    bad_objects: int = 0  # objects left out because conversion failed

    def add(self, other: InformerStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between retries after failures: exponential from `initial` seconds up to `cap`."""

    initial: float = 0.5
    cap: float = 30.0  # an apiserver restart takes ~10-30 s; retrying faster only adds load

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.initial * (2 ** min(attempt, 20)))
        # Full-range jitter between half and all of the ceiling spreads the reconnects of many
        # informers (and many replicas) after an apiserver restart.
        return random.uniform(ceiling / 2, ceiling)


class Informer(Generic[T]):
    """One resource, cluster-wide or in one namespace, kept current by LIST then WATCH.

    Objects are converted once per event with `convert`; objects it rejects are logged once and
    left out. `run()` loops until cancelled; `synced` is set after the first full list.
    """

    def __init__(
        self,
        api: ApiClient,
        resource: Resource,
        convert: Callable[[Mapping[str, Any]], T],
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        on_change: OnChange | None = None,
        page_size: int = 500,
        watch_timeout: int = 300,
        backoff: Backoff = Backoff(),
        optional: bool = False,
    ) -> None:
        self.api = api
        self.resource = resource
        # A resource whose absence (404 on LIST: its CRD is not installed) is an empty store,
        # looked for again every ABSENT_RECHECK seconds, not an error.
        self.optional = optional
        self.absent = False
        self.convert = convert
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.on_change = on_change
        # 500 per page keeps one page's JSON around a few MB for Deployments.
        self.page_size = page_size
        # The server ends each watch after this long; re-watching from the last resourceVersion
        # is cheap and bounds how long a silently dead connection can go unnoticed.
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.synced = asyncio.Event()
        self.stats = InformerStats()
        self._store: dict[Key, T] = {}
        # Bumped on every change to the store: what the cache's groupings are kept by.
        self.version = 0
        self._bad: dict[Key, str] = {}  # keys whose last version failed conversion
        self._resource_version = ""
        self._delivered = False  # whether the current watch has delivered any event
        # Why the first LIST has not succeeded yet (an answer such as 403), for the reasons
        # given where the store is needed; None once listed.
        self.unlisted_because: str | None = None
        self._path = resource_path(resource.group_version, resource.plural, namespace=namespace)

    @property
    def resource_version(self) -> str:
        return self._resource_version

    def items(self) -> Mapping[Key, T]:
        """The current store; read it, do not keep it across awaits."""
        return self._store

    def get(self, namespace: str, name: str) -> T | None:
        return self._store.get((namespace, name))

    def __len__(self) -> int:
        return len(self._store)

    def _fields(self) -> dict[str, str]:
        out = {"resource": self.resource.plural}
        if self.namespace is not None:
            out["namespace"] = self.namespace
        if self.label_selector:
            out["label_selector"] = self.label_selector
        if self.field_selector:
            out["field_selector"] = self.field_selector
        return out

    async def run(self) -> None:
        need_list = True
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            self._delivered = False
            try:
                if need_list:
                    if await self._absent():
                        await asyncio.sleep(ABSENT_RECHECK)
                        continue
                    need_list = False
                started = loop.time()
                delivered = await self._watch()
                # A watch that ended by the server's timeout is routine. One that ends at once
                # and empty-handed, again and again, is a sick apiserver: back off from it.
                if delivered or loop.time() - started >= 1.0:
                    attempt = 0
                    continue
                log.debug("watch ended early", **self._fields())
            except Gone as exc:
                # The resourceVersion fell out of etcd's history: only a fresh LIST can say
                # what exists now. Back off only if this keeps happening.
                log.info("watch expired, listing again", error=str(exc), **self._fields())
                need_list = True
                if attempt == 0:
                    attempt += 1
                    continue
            except KubeError as exc:
                self.stats.errors += 1
                if not self.synced.is_set():
                    self.unlisted_because = str(exc)
                log.warning(
                    "request failed",
                    phase="list" if need_list else "watch",
                    error=str(exc),
                    status=exc.status,
                    **self._fields(),
                )
            except TRANSPORT_ERRORS as exc:
                self.stats.errors += 1
                log.warning(
                    "watch dropped",
                    error=f"{type(exc).__name__}: {exc}",
                    resource_version=self._resource_version,
                    **self._fields(),
                )
            except Exception as exc:
                # A bug or a malformed answer: nothing is known about the stream's position
                # any more, so start over from a LIST rather than die.
                self.stats.errors += 1
                log.error("watch loop failed", exc_info=True, error=repr(exc), **self._fields())
                need_list = True
            if self._delivered:
                # The stream was healthy before it broke: this is a new outage, not the next
                # try of an old one, so retry soon; a lagging cache of one resource beside
                # fresh caches of the others is what the executor's live check guards against.
                attempt = 0
            delay = self.backoff.delay(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    async def _absent(self) -> bool:
        """LIST; True when an optional resource is not served (then the store is empty). An
        optional resource is first looked for in discovery (open to everyone): a LIST of an API
        that is not served would be refused with 403 wherever RBAC does not grant it (the
        namespaced variant without its KEDA Role), since authorization comes before the 404.
        When it is served, a 403 stands (the store stays unlisted, and what needs it says
        why); a 404 (the CRD just deleted) is absent too."""
        if self.optional and not await self._served():
            return self._gone()
        try:
            await self._list()
        except NotFound:
            if not self.optional:
                raise
            return self._gone()
        self.absent = False
        return False

    async def _served(self) -> bool:
        """Whether the API server serves this resource, from discovery."""
        try:
            found = await request_json(self.api, "GET", f"/apis/{self.resource.group_version}")
        except NotFound:
            return False
        return any(r.get("name") == self.resource.plural for r in found.get("resources") or [])

    def _gone(self) -> bool:
        """The resource is not served: an empty store, synced; True. A refusal from when it
        was served (its CRD being deleted) no longer says why the store is unlisted."""
        if not self.absent:
            log.info("resource not served, looked for again later", **self._fields())
        self.absent = True
        self.unlisted_because = None
        if self._store:
            self._store = {}
            self.version += 1
        self.synced.set()
        return True

    async def _list(self) -> None:
        store: dict[Key, T] = {}
        bad: dict[Key, str] = {}
        token: str | None = None
        resource_version = ""
        while True:
            answer = await request_json(
                self.api,
                "GET",
                self._path,
                query={
                    "labelSelector": self.label_selector,
                    "fieldSelector": self.field_selector,
                    "limit": self.page_size,
                    "continue": token,
                },
            )
            self.stats.list_pages += 1
            items = answer.get("items") or []
            for obj in items:
                self._convert_into(store, bad, obj)
            meta = answer.get("metadata") or {}
            resource_version = str(meta.get("resourceVersion") or "")
            token = meta.get("continue") or None
            if not token:
                break
        if not resource_version:
            raise KubeError(f"LIST {self._path}: answer has no resourceVersion")
        previous = self._store
        self._store = store
        self.version += 1
        self._bad = bad
        self._resource_version = resource_version
        if self.stats.lists > 0:
            self.stats.relists += 1
        self.stats.lists += 1
        self.synced.set()
        self.unlisted_because = None
        log.info(
            "listed",
            objects=len(store),
            left_out=len(bad),
            resource_version=resource_version,
            **self._fields(),
        )
        self._notify_diff(previous, store)

    def _convert_into(self, store: dict[Key, T], bad: dict[Key, str], obj: Any) -> None:
        key = _key(obj)
        try:
            store[key] = self.convert(obj)
        except Exception as exc:
            message = str(exc)
            if self._bad.get(key) != message:
                self.stats.bad_objects += 1
                log.warning("object left out", error=message, name=key[1], **self._fields())
            bad[key] = message

    def _notify_diff(self, before: Mapping[Key, T], after: Mapping[Key, T]) -> None:
        if self.on_change is None:
            return
        for key in before.keys() - after.keys():
            self._notify("DELETED", key)
        for key, value in after.items():
            old = before.get(key)
            if old is None:
                self._notify("ADDED", key)
            elif old != value:
                self._notify("MODIFIED", key)

    def _notify(self, event: str, key: Key) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(event, key)
        except Exception:
            log.error("change callback failed", exc_info=True, event=event, **self._fields())

    async def _watch(self) -> bool:
        """One WATCH from the last resourceVersion; True when it delivered any event."""
        self.stats.watches += 1
        resp = await open_stream(
            self.api,
            "GET",
            self._path,
            query={
                "watch": True,
                "resourceVersion": self._resource_version,
                "allowWatchBookmarks": True,
                "timeoutSeconds": self.watch_timeout,
                "labelSelector": self.label_selector,
                "fieldSelector": self.field_selector,
            },
            # Bookmarks arrive about once a minute and the server closes the stream after
            # watch_timeout: silence for longer than that means the connection is dead.
            request_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=10, sock_read=self.watch_timeout + 60
            ),
        )
        delivered = False
        try:
            while True:
                line = await resp.content.readline()
                if not line:
                    return delivered
                if not line.strip():
                    continue
                self._apply(json.loads(line))
                delivered = self._delivered = True
        finally:
            # Not release(): a stream cut short must not go back into the connection pool.
            resp.close()

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, Mapping):
            raise KubeError(f"watch {self._path}: event without an object: {kind}")
        if kind == "ERROR":
            code = obj.get("code")
            raise status_error(
                code if isinstance(code, int) else 0,
                str(obj.get("reason") or ""),
                json.dumps(obj),
            )
        meta = obj.get("metadata")
        rv = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
            if rv:
                self._resource_version = str(rv)
            return
        key = _key(obj)
        self.stats.events += 1
        if kind == "DELETED":
            self._bad.pop(key, None)
            if self._store.pop(key, None) is not None:
                self.version += 1
                self._notify("DELETED", key)
        elif kind in ("ADDED", "MODIFIED"):
            try:
                value = self.convert(obj)
            except Exception as exc:
                message = str(exc)
                if self._bad.get(key) != message:
                    self.stats.bad_objects += 1
                    log.warning("object left out", error=message, name=key[1], **self._fields())
                self._bad[key] = message
                if self._store.pop(key, None) is not None:
                    self.version += 1
                    self._notify("DELETED", key)
            else:
                self._bad.pop(key, None)
                existed = key in self._store
                self._store[key] = value
                self.version += 1
                self._notify("MODIFIED" if existed else "ADDED", key)
        else:
            raise KubeError(f"watch {self._path}: unknown event type {kind!r}")
        if rv:
            self._resource_version = str(rv)


def _key(obj: Any) -> Key:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return ("", "")
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class ClusterCache:
    """Deployments and Services, cluster-wide or for a list of namespaces, as model objects.

    `changed` is set on every change (the daemon clears it and debounces it into an early
    wake-up); `run()` returns after `stop()`.
    """

    def __init__(
        self,
        api: ApiClient,
        *,
        namespaces: Sequence[str] | None = None,
        label_selector: str | None = None,
        watch_timeout: int = 300,
        page_size: int = 500,
        backoff: Backoff = Backoff(),
        on_change: OnChange | None = None,
    ) -> None:
        self.changed = asyncio.Event()
        self._on_change = on_change
        scopes: Sequence[str | None] = list(dict.fromkeys(namespaces)) if namespaces else [None]
        self._api = api
        self._scopes = scopes
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._backoff = backoff
        self.deployment_informers = self._watched(
            DEPLOYMENTS, deployment_from_k8s, label_selector=label_selector
        )
        self.service_informers = self._watched(SERVICES, service_from_k8s)
        # Argo Rollouts (optional: its CRD may not be served; never waited for, as where the
        # namespaced variant's Role for them is not applied a LIST is refused: their colors
        # appear once listed) and the ReplicaSets Argo Rollouts labels, waited for like the
        # Deployments; `label_selector` selects Rollouts, as it does Deployments.
        self.rollout_informers = self._watched(
            ROLLOUTS, rollout_from_k8s, label_selector=label_selector, optional=True
        )
        self.replicaset_informers = self._watched(
            REPLICASETS, replicaset_from_k8s, label_selector=ROLLOUT_HASH
        )
        # What scales a color or guards its pods: never waited for (see `objects`).
        self.object_informers: list[Informer[ColorObject]] = [
            informer
            for resource, kind, optional in COLOR_OBJECTS
            for informer in self._watched(
                resource, functools.partial(color_object_from_k8s, kind), optional=optional
            )
        ]
        self._deployments = _Workloads(
            self.deployment_informers, self.replicaset_informers, self.rollout_informers
        )
        self._services = _Grouping(self.service_informers)
        self._objects = _Grouping(self.object_informers)
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        # The colors' pods, watched once the labels naming app and color are known (they come
        # with the policy); they never wake the loop: a pod to mark waits for the next cycle.
        self.pod_informers: list[Informer[PodMark]] = []
        self._pod_labels: tuple[str, str] | None = None
        self._pod_tasks: list[asyncio.Task[None]] = []
        self._pods: tuple[tuple[tuple[Informer[PodMark], int], ...], list[PodMark]] | None = None

    def _watched(
        self,
        resource: Resource,
        convert: Callable[[Mapping[str, Any]], T],
        *,
        label_selector: str | None = None,
        optional: bool = False,
    ) -> list[Informer[T]]:
        """One informer of `resource` per scope (each namespace, or the cluster), waking the
        loop on every change."""
        return [
            Informer(
                self._api,
                resource,
                convert,
                namespace=ns,
                label_selector=label_selector,
                on_change=self._changed,
                page_size=self._page_size,
                watch_timeout=self._watch_timeout,
                backoff=self._backoff,
                optional=optional,
            )
            for ns in self._scopes
        ]

    @property
    def informers(self) -> list[Informer[Any]]:
        return [*self.deployment_informers, *self.service_informers, *self.replicaset_informers]

    @property
    def synced(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers)

    def _changed(self, event: str, key: Key) -> None:
        self.changed.set()
        if self._on_change is not None:
            self._on_change(event, key)

    async def wait_synced(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """True once every informer has listed; False if `timeout` seconds pass first."""
        try:
            async with asyncio.timeout(timeout):
                for inf in self.informers:
                    await inf.synced.wait()
        except TimeoutError:
            return False
        return True

    def deployments(self) -> dict[str, list[Deployment]]:
        """The Deployments and Rollout colors by namespace. The same dict, lists and objects
        while none changed (what lets a cycle skip work it did last time); treat them as
        read-only."""
        return self._deployments.get()

    def watch_pods(self, app_label: str, color_label: str) -> None:
        """Keep the pods labelled with both labels watched (restarted if the labels change)."""
        if self._pod_labels == (app_label, color_label) or self._stop.is_set():
            return
        for task in self._pod_tasks:
            task.cancel()
        self._pod_labels = (app_label, color_label)
        convert = pod_mark_converter(app_label, color_label)
        self.pod_informers = [
            Informer(
                self._api,
                PODS,
                convert,
                namespace=ns,
                label_selector=f"{app_label},{color_label}",
                page_size=self._page_size,
                watch_timeout=self._watch_timeout,
                backoff=self._backoff,
            )
            for ns in self._scopes
        ]
        self._pod_tasks = [
            asyncio.create_task(inf.run(), name=f"informer pods {inf.namespace or '*'}")
            for inf in self.pod_informers
        ]

    def pods(self) -> list[PodMark] | None:
        """The colors' pods, or None until they are watched and listed."""
        if not self.pod_informers or not all(i.synced.is_set() for i in self.pod_informers):
            return None
        versions = tuple([(inf, inf.version) for inf in self.pod_informers])
        if self._pods is None or self._pods[0] != versions:
            pods = [pod for inf in self.pod_informers for pod in inf.items().values()]
            self._pods = (versions, pods)
        return self._pods[1]

    def objects(self) -> dict[str, list[ColorObject]] | None:
        """The HPAs, PDBs and ScaledObjects by namespace, or None until all are listed (a
        ScaledObject informer whose CRD is not served counts as listed, and empty)."""
        if not all(inf.synced.is_set() for inf in self.object_informers):
            return None
        return self._objects.get()

    def objects_unlisted(self) -> str:
        """Why `objects` is None: which are not listed yet, and the last answer if any."""
        for inf in self.object_informers:
            if not inf.synced.is_set():
                why = f" ({inf.unlisted_because})" if inf.unlisted_because else ""
                return f"the {inf.resource.plural} are not listed yet{why}"
        return "the HorizontalPodAutoscalers and ScaledObjects are not listed yet"

    def services(self) -> dict[str, list[Service]]:
        """The Services by namespace; the same dict while none changed, as `deployments`."""
        return self._services.get()

    def stats(self) -> InformerStats:
        total = InformerStats()
        for inf in [*self.informers, *self.rollout_informers, *self.object_informers]:
            total.add(inf.stats)
        return total

    async def run(self) -> None:
        if self._running:
            raise RuntimeError("ClusterCache.run() is already running")
        self._running = True
        self._stopped.clear()
        self._tasks = [
            asyncio.create_task(
                inf.run(), name=f"informer {inf.resource.plural} {inf.namespace or '*'}"
            )
            for inf in [*self.informers, *self.rollout_informers, *self.object_informers]
        ]
        stop = asyncio.create_task(self._stop.wait(), name="cluster cache stop")
        try:
            done, _ = await asyncio.wait([*self._tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                # Informers only end by raising: a bug, surfaced rather than hidden.
                error = None if task is stop or task.cancelled() else task.exception()
                if error is not None:
                    raise error
        finally:
            stop.cancel()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(stop, *self._tasks, return_exceptions=True)
            self._tasks = []
            self._running = False
            self._stopped.set()

    async def stop(self) -> None:
        """Cancel the informers and wait until their tasks are finished."""
        self._stop.set()
        for task in self._pod_tasks:
            task.cancel()
        await asyncio.gather(*self._pod_tasks, return_exceptions=True)
        self._pod_tasks = []
        if self._running:
            await self._stopped.wait()


class _Grouping(Generic[T]):
    """The objects of some informers by namespace, regrouped only when one of them changed. A
    namespace whose objects did not change keeps its list object."""

    def __init__(self, informers: list[Informer[T]]) -> None:
        self._informers = informers
        self._versions: tuple[int, ...] | None = None
        self._grouped: dict[str, list[T]] = {}

    def get(self) -> dict[str, list[T]]:
        versions = tuple([inf.version for inf in self._informers])
        if versions == self._versions:
            return self._grouped
        grouped: dict[str, list[T]] = {}
        for inf in self._informers:
            for (namespace, _), value in inf.items().items():
                grouped.setdefault(namespace, []).append(value)
        before = self._grouped
        for namespace, items in grouped.items():
            old = before.get(namespace)
            if old is not None and len(old) == len(items) and all(map(operator.is_, old, items)):
                grouped[namespace] = old
        self._versions = versions
        self._grouped = grouped
        return grouped


class _Workloads:
    """The Deployments by namespace, each ReplicaSet of a blueGreen Rollout among them as a
    Rollout color (`objects.joined`), regrouped only when one of them changed. A joined color
    is kept while its ReplicaSet and Rollout are the same objects, so the planner's memo sees
    the same objects cycle after cycle, as for Deployments."""

    def __init__(
        self,
        deployments: list[Informer[Deployment]],
        replicasets: list[Informer[Deployment]],
        rollouts: list[Informer[Rollout]],
    ) -> None:
        self._deployments = _Grouping(deployments)
        self._replicasets = replicasets
        self._rollouts = rollouts
        self._versions: tuple[int, ...] | None = None
        self._plain: dict[str, list[Deployment]] | None = None
        self._joined: dict[Key, tuple[Deployment, Rollout, Deployment]] = {}
        self._grouped: dict[str, list[Deployment]] = {}

    def get(self) -> dict[str, list[Deployment]]:
        plain = self._deployments.get()
        versions = tuple(
            [inf.version for inf in self._replicasets] + [inf.version for inf in self._rollouts]
        )
        if not any(len(inf) for inf in self._replicasets):
            self._joined = {}
            self._grouped = plain
            return plain
        if versions == self._versions and plain is self._plain:
            return self._grouped
        rollouts = {key: r for inf in self._rollouts for key, r in inf.items().items()}
        joined_before = self._joined
        kept: dict[Key, tuple[Deployment, Rollout, Deployment]] = {}
        extra: dict[str, list[Deployment]] = {}
        for inf in self._replicasets:
            for key, rs in inf.items().items():
                rollout = rollouts.get((rs.namespace, rs.owner))
                if rollout is None or not rollout.blue_green:
                    continue
                before = joined_before.get(key)
                if before is not None and before[0] is rs and before[1] is rollout:
                    color = before[2]
                else:
                    color = joined(rs, rollout)
                kept[key] = (rs, rollout, color)
                extra.setdefault(rs.namespace, []).append(color)
        grouped = dict(plain)
        for ns, colors in extra.items():
            combined = [*plain.get(ns, ()), *colors]
            old = self._grouped.get(ns)
            same = old is not None and len(old) == len(combined)
            if old is not None and same and all(map(operator.is_, old, combined)):
                combined = old
            grouped[ns] = combined
        self._joined = kept
        self._versions = versions
        self._plain = plain
        self._grouped = grouped
        return grouped
