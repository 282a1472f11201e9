"""Applies a Plan to the cluster: annotation stamps, scale-downs and deletes of Deployments.

A Rollout color is a ReplicaSet of an Argo Rollout: its stamps go on the ReplicaSet, and its
scale-down is one annotation patch (its `scale-down-deadline` set to now, with the bookkeeping),
never a /scale or a delete: Argo Rollouts scales its ReplicaSet down itself. Its Events go on
the ReplicaSet and on the Rollout.

Each action carries the resourceVersion (and uid) the planner saw, sent as a precondition, so an
action never lands on a Deployment that changed since: the apiserver answers 409 and the next
cycle plans again from fresh state. Each applied action gets one log line and one Event; a
scale-down or delete gets them before the call, so a crash cannot leave it unrecorded.

Every applied action, routine bookkeeping included (the live-at stamp), gets an Event: the planner
only plans transitions, so a color gets a handful of Events in its whole life, and `kubectl
describe deployment` then tells the full story of the color (MarkedLive, MarkedRetired,
DrainStarted, ScaledDown...). Skipped actions (dry run, paused, stopping) get no Event. The
exception is a cycle stamping many colors at first sight (a first start in a big cluster):
those live-at and retired-at stamps get one summary Event per app (`ColorsMarked`), not one
each; failures still get their own Warning.

Writes go out with bounded concurrency under a client-side rate limit (`RateLimiter`, the
`--kube-qps`/`--kube-burst` flags). Urgent actions (scale-downs, deletes, drain resets) go
first and take tokens before any stamp; stamps not started within `stamp_budget` seconds of
the cycle's start are deferred (skipped, planned again next cycle: the stamps that did land
wake it through the watch), so a write storm of bookkeeping cannot hold a cycle for minutes.

A consolidation (CONSOLIDATE: a draining color scaled to fewer pods, never 0) first reads the
color's pods fresh and refuses unless they are exactly the pods planned, all running and ready;
then sets `controller.kubernetes.io/pod-deletion-cost` on each pod (the planned step's costs:
its connections, the highest for the pods that must stay), so the ReplicaSet controller removes
the idle pods and no other; then, when an HPA targets the color, lowers its bounds with the
step (`kube.autoscaling`: its minReplicas to the step's replicas, its old bounds recorded on
it), so the HPA controller agrees with the step instead of scaling the color straight back
up; then writes its record and scales through /scale as a scale-down does. A step on a color
whose autoscalers are not known, or cannot be acted through
(`core.scalers.consolidation_problem`), is refused. A scale to 0 first pauses the color's KEDA
ScaledObjects (`autoscaling.keda.sh/paused-replicas: "0"`), which would otherwise scale it
back up to their minReplicaCount.

Pods of a retired color are kept annotated `rainbowd.io/phase: retired` (`mark_pods`, each
cycle, from the cache's watch of the colors' pods), so the app can read it through the downward
API (and, say, ask clients to reconnect); pods of a live color lose the mark.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.core.consolidation import costs_to_keep
from rainbowd.core.model import (
    ACTION_EVENTS,
    PHASE,
    POD_DELETION_COST,
    REASONS,
    SCALE_DOWN_DEADLINE,
    Action,
    ActionKind,
    ColorObject,
    Deployment,
    ObjectKind,
    Plan,
    Reason,
    Severity,
    Snapshot,
    State,
    WorkloadKind,
)
from rainbowd.core.objects import ObjectError, deployment_from_k8s, service_from_k8s
from rainbowd.core.scalers import consolidation_problem, hpa_of, scaled_objects_to_pause
from rainbowd.kube.autoscaling import lower_hpa, pause_scaled_objects
from rainbowd.kube.caching import PodMark
from rainbowd.kube.clients import (
    MERGE_PATCH,
    Conflict,
    KubeError,
    NotFound,
    RateLimiter,
    request_json,
    resource_path,
)
from rainbowd.kube.events import EventRecorder, EventType
from rainbowd.logs import get_logger

log = get_logger(__name__)

RETIRED_PHASE = "retired"
# Pod annotation patches in flight at once for one color: a chat app may run hundreds of pods,
# and one at a time would stall the cycle, while all at once would flood the apiserver.
POD_PATCH_CONCURRENCY = 8
# Tries of the /scale call after the original-replicas stamp, when only status moved meanwhile:
# the deployment controller writes status once per change it sees, so a few tries suffice.
SCALE_ATTEMPTS = 3
# Actions applied at once: enough to keep a rate limit of a few hundred writes a second busy over
# a real network, few enough that a cycle's writes never pile up on the apiserver.
WRITE_CONCURRENCY = 8
# A cycle with more first-sight stamps than this (live-at, retired-at on colors rainbowd finds
# already live or retired) records one summary Event per app instead of one per stamp.
SUMMARY_EVENTS_ABOVE = 20
_FIRST_SIGHT = frozenset({Reason.OBSERVED_LIVE, Reason.OBSERVED_RETIRED})
# Pods patched but not yet seen marked through the watch, remembered so a lagging watch does not
# get them patched twice; forgotten wholesale past this size (a second patch is harmless).
_MARKING_MEMORY = 10_000


class ActionOutcome(enum.StrEnum):
    """How applying one action ended (the planner's decision records are `notes.Outcome`)."""

    OK = "ok"
    GONE = "gone"  # the Deployment no longer exists: for a delete, already done
    CONFLICT = "conflict"  # it changed since the snapshot (precondition failed): re-plan
    ERROR = "error"
    SKIPPED = "skipped"  # not attempted: dry run, paused, or stopping


@dataclass(frozen=True)
class ActionResult:
    action: Action
    outcome: ActionOutcome
    error: str | None = None
    # A delete: the color's HPAs, PDBs and ScaledObjects its garbage collection leaves behind
    # (no ownerReference to it), each as `Kind name`.
    left_behind: tuple[str, ...] = ()


def event_reason(action: Action, outcome: ActionOutcome) -> str:
    """The CamelCase Event reason for what happened to `action`."""
    own = REASONS[action.reason].event
    if action.kind is ActionKind.ANNOTATE and own is not None:
        done, attempt = own
    else:
        done, attempt = ACTION_EVENTS[action.kind]
    if outcome is ActionOutcome.OK:
        return done
    if outcome is ActionOutcome.GONE:
        return "AlreadyDeleted"
    if outcome is ActionOutcome.CONFLICT:
        return f"{attempt}Conflict"
    return f"{attempt}Failed"


def event_type(action: Action, outcome: ActionOutcome) -> EventType:
    if outcome in (ActionOutcome.CONFLICT, ActionOutcome.ERROR):
        return "Warning"
    if outcome is ActionOutcome.OK and REASONS[action.reason].severity is Severity.WARNING:
        return "Warning"
    return "Normal"


def is_urgent(action: Action) -> bool:
    """Scale-downs, deletes, drain resets and a Rollout color's deadline kept ahead (Argo
    Rollouts' timer is running): never queued behind routine stamps."""
    return (
        action.disruptive
        or action.reason is Reason.DRAIN_RESET
        or SCALE_DOWN_DEADLINE in action.annotations
    )


def _pod(item: Any) -> tuple[str, bool] | None:
    """A listed pod's name, and whether it is running, ready and not terminating; None for a
    pod already terminating (it is going, whatever the step does)."""
    meta = item.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str):
        return None
    if meta.get("deletionTimestamp"):
        return None
    status = item.get("status") or {}
    ready = status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return name, ready


def _precondition(resource_version: str) -> dict[str, str]:
    # An empty resourceVersion in a patch would mean "whatever the current one is", which is no
    # precondition at all; leave it out so that is visible rather than implied.
    return {"resourceVersion": resource_version} if resource_version else {}


def _deployment_path(action: Action, subresource: str = "") -> str:
    """The action's object: its Deployment, or a Rollout color's ReplicaSet."""
    plural = "replicasets" if action.workload is WorkloadKind.ROLLOUT else "deployments"
    path = resource_path("apps/v1", plural, namespace=action.namespace, name=action.name)
    return f"{path}/{subresource}" if subresource else path


class Executor:
    """Applies plans with the given API client; one per process, reused across cycles."""

    def __init__(
        self,
        api: ApiClient,
        recorder: EventRecorder,
        *,
        app_label: str = "app",
        color_label: str = "color",
        dry_run: bool = False,
        timeout: float = 30.0,
        limiter: RateLimiter | None = None,
        stamp_budget: float = 20.0,
    ) -> None:
        """`timeout` (seconds) bounds one action's API calls, so a hung apiserver cannot hold
        the cycle (and a SIGTERM waiting on it) forever; 30 s is far above a healthy answer.
        `limiter` paces every write (None: unpaced); `stamp_budget` (seconds) is how long a
        cycle keeps starting routine stamps before deferring the rest to the next cycle."""
        self._api = api
        self._recorder = recorder
        self.app_label = app_label
        self.color_label = color_label
        self.dry_run = dry_run
        self.timeout = timeout
        self.limiter = limiter
        self.stamp_budget = stamp_budget
        # First-sight stamps of apps whose other stamps were deferred to a later cycle: their
        # summary Event waits until the app's last one lands, so each app gets one.
        self._marks_pending: dict[tuple[str, str], list[Action]] = {}
        self._marking: dict[tuple[str, str], str | None] = {}
        # Pods whose cost was patched, with the cost the watch showed then and the one written.
        self._costing: dict[tuple[str, str], tuple[str | None, int]] = {}
        # What scales the colors, by namespace (the cache's `objects`; None: not listed yet).
        self.objects: Callable[[], Mapping[str, list[ColorObject]] | None] = lambda: {}

    async def apply(self, plan: Plan, *, stop: asyncio.Event | None = None) -> list[ActionResult]:
        """Apply the plan's actions; one result per action, in the plan's order.

        Urgent actions (`is_urgent`) are applied first, one at a time, then the routine stamps
        with at most WRITE_CONCURRENCY in flight. Errors are reported in the results, never
        raised (except cancellation): one failed action does not stop the others. `stop` is
        looked at before each action starts: those under way finish, the rest are skipped.
        """
        # Once: Plan.actions gathers them from every color, and 10,000 first stamps looked up
        # through it one by one took minutes.
        actions = plan.actions
        results: list[ActionResult | None] = [None] * len(actions)
        dry_run = plan.dry_run or self.dry_run
        urgent: list[int] = []
        routine: list[int] = []
        for i, action in enumerate(actions):
            if dry_run:
                results[i] = self._skip(action, "dry-run", dry_run=True)
            elif plan.paused and action.disruptive:
                # The planner holds cleanups when paused; this is the second lock on that door.
                # Stamps still go through: they keep the record of when colors retired true.
                results[i] = self._skip(action, "paused", dry_run=False)
            else:
                (urgent if is_urgent(action) else routine).append(i)
        await self._apply_group(actions, urgent, results, stop=stop, urgent=True)
        first_sight = sum(1 for i in routine if actions[i].reason in _FIRST_SIGHT)
        summarize = first_sight > SUMMARY_EVENTS_ABOVE or bool(self._marks_pending)
        deadline = asyncio.get_running_loop().time() + self.stamp_budget
        await self._apply_group(
            actions,
            routine,
            results,
            stop=stop,
            urgent=False,
            deadline=deadline,
            summarize=summarize,
        )
        done = [r for r in results if r is not None]
        if summarize:
            await self._summarize(done)
        return done

    async def _apply_group(
        self,
        actions: Sequence[Action],
        indices: list[int],
        results: list[ActionResult | None],
        *,
        stop: asyncio.Event | None,
        urgent: bool,
        deadline: float | None = None,
        summarize: bool = False,
    ) -> None:
        if not indices:
            return
        loop = asyncio.get_running_loop()
        queue = iter(indices)

        async def worker() -> None:
            for i in queue:
                action = actions[i]
                if stop is not None and stop.is_set():
                    results[i] = self._skip(action, "stopping", dry_run=False)
                elif deadline is not None and loop.time() > deadline:
                    results[i] = self._skip(action, "deferred", dry_run=False)
                else:
                    quiet = summarize and action.reason in _FIRST_SIGHT
                    results[i] = await self._apply_one(action, urgent=urgent, quiet=quiet)

        # Urgent actions one at a time, in the plan's order: they are few (the planner's budgets
        # bound them) and a stop then leaves at most one under way. Stamps in parallel.
        workers = 1 if urgent else min(WRITE_CONCURRENCY, len(indices))
        await asyncio.gather(*(worker() for _ in range(workers)))

    async def _summarize(self, results: list[ActionResult]) -> None:
        """One `ColorsMarked` Event per app for its first-sight stamps that landed; an app with
        stamps deferred past the budget waits for them (its landed ones are kept for then)."""
        landed: dict[tuple[str, str], list[Action]] = {}
        waiting: set[tuple[str, str]] = set()
        for r in results:
            if r.action.reason not in _FIRST_SIGHT:
                continue
            key = (r.action.namespace, r.action.app)
            if r.outcome is ActionOutcome.OK:
                landed.setdefault(key, []).append(r.action)
            elif r.outcome is ActionOutcome.SKIPPED:
                waiting.add(key)
        for key, acts in landed.items():
            self._marks_pending.setdefault(key, []).extend(acts)
        by_app = {k: v for k, v in self._marks_pending.items() if k not in waiting}
        for key in by_app:
            del self._marks_pending[key]
        limit = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def summary(app: str, actions: list[Action]) -> None:
            live = [a.name for a in actions if a.reason is Reason.OBSERVED_LIVE]
            retired = [a.name for a in actions if a.reason is Reason.OBSERVED_RETIRED]
            parts = [f"live-at on {', '.join(live)}"] if live else []
            parts += [f"retired-at on {', '.join(retired)}"] if retired else []
            first = actions[0]
            async with limit:
                await self._on_deployment(
                    first.namespace,
                    first.name,
                    first.uid,
                    type="Normal",
                    reason="ColorsMarked",
                    note=f"stamped {len(actions)} color(s) of {app} at first sight: "
                    + "; ".join(parts),
                    action="Annotate",
                )

        await asyncio.gather(*(summary(app, acts) for (_, app), acts in by_app.items()))

    async def _apply_one(
        self, action: Action, *, urgent: bool = True, quiet: bool = False
    ) -> ActionResult:
        """Apply one action now, whatever dry-run says; log it and record its Event.

        A scale-down or delete is announced first (its log line and its Event, as if done), so
        a crash (kill -9) right after the call still leaves the record of what was done; if
        the call then fails, a Warning Event with the error follows.
        """
        announced = action.disruptive
        if announced:
            log.info("action starting", **self._fields(action, ActionOutcome.OK), dry_run=False)
            if self.limiter is not None:
                await self.limiter.acquire(urgent=urgent)
            live = await self._live_now(action)
            if live is None and action.kind is ActionKind.CONSOLIDATE:
                live = self._scalers_problem(action) or await self._pods_changed(action)
            if live is not None:
                return await self._refuse(action, live)
            await self._emit(action, ActionOutcome.OK, action.message)
        if self.limiter is not None:
            await self.limiter.acquire(urgent=urgent)
        result = await self._perform(action)
        fields = self._fields(action, result.outcome)
        if result.outcome in (ActionOutcome.OK, ActionOutcome.GONE):
            log.info("action applied", **fields, dry_run=False)
        else:
            log.warning("action applied", **fields, dry_run=False, error=result.error)
        if action.kind is ActionKind.DELETE and result.outcome is ActionOutcome.OK:
            result = await self._report_left_behind(result)
        if announced and (
            result.outcome is ActionOutcome.OK
            or (result.outcome is ActionOutcome.GONE and action.kind is ActionKind.DELETE)
        ):
            return result  # the announcement said it all
        if quiet and result.outcome is ActionOutcome.OK:
            return result  # told in the app's summary Event
        note = action.message
        if result.error:
            note = f"{note} ({result.outcome}: {result.error})"
        await self._emit(action, result.outcome, note)
        return result

    async def _live_now(self, action: Action) -> str | None:
        """Why the action's color may be live right now, read from the apiserver itself (a
        quorum read), or None when no Service selects it.

        The plan was made from watch caches, and one cache can lag another: after a dropped
        Service stream the Deployments may be current while a rollback of the Service to this
        very color has not arrived yet. The Deployment's preconditions cannot see that, so
        before a scale-down or delete the Services of its namespace are read fresh: a color
        some Service selects is live and is never touched. An error reading them refuses the
        action too (nothing is deleted on doubt). Two reads per disruptive action, none in a
        steady cycle."""
        try:
            async with asyncio.timeout(self.timeout):
                deployment = await request_json(self._api, "GET", _deployment_path(action))
                services = await request_json(
                    self._api,
                    "GET",
                    resource_path("v1", "services", namespace=action.namespace),
                )
            labels = deployment_from_k8s(deployment).template_labels
            items = [service_from_k8s(item) for item in services.get("items") or []]
        except NotFound:
            return None  # gone: the action's own call will say so
        except (KubeError, TimeoutError, ObjectError) as exc:
            return f"the Services could not be read to check it is not live ({exc or 'timeout'})"
        for service in items:
            if service.selects(labels):
                return f"Service {service.name} selects this color now; the plan's view was stale"
        return None

    async def _pods_changed(self, action: Action) -> str | None:
        """Why the color's pods are not the ones the consolidation step was planned on (read
        fresh: some pod gone, added, or not running and ready), or None.

        The ReplicaSet controller removes unready pods first whatever their cost, and a pod
        the plan did not see has no cost yet: either way other pods than the idle ones could
        go, so the step waits for the next cycle's plan."""
        step = action.step
        if step is None:
            return "a consolidation without its step (a planning bug)"
        selector = f"{self.app_label}={action.app},{self.color_label}={action.color}"
        try:
            async with asyncio.timeout(self.timeout):
                listing = await request_json(
                    self._api,
                    "GET",
                    resource_path("v1", "pods", namespace=action.namespace),
                    query={"labelSelector": selector},
                )
        except (KubeError, TimeoutError) as exc:
            return f"the color's pods could not be read ({exc or 'timeout'})"
        pods = [pod_mark for item in listing.get("items") or [] if (pod_mark := _pod(item))]
        names = {name for name, _ in pods}
        if names != set(step.pods):
            return (
                f"the color's pods changed since the plan ({len(names)} now, "
                f"{len(step.pods)} planned)"
            )
        for name, ready in pods:
            if not ready:
                return f"pod {name} is not running and ready now"
        return None

    def _scalers_problem(self, action: Action) -> str | None:
        """Why the step cannot be taken through what scales the color now, or None."""
        objects = self.objects()
        if objects is None:
            return "the color's HorizontalPodAutoscalers and ScaledObjects are not listed yet"
        found = objects.get(action.namespace, ())
        return consolidation_problem(action.namespace, action.name, found)

    async def _through_autoscalers(self, action: Action) -> None:
        """Brings the color's autoscalers in line with the action before its /scale: a step
        lowers the HPA's bounds, a scale to 0 pauses the ScaledObjects."""
        objects = (self.objects() or {}).get(action.namespace, ())
        if action.kind is ActionKind.SCALE:
            scaled = scaled_objects_to_pause(action.namespace, action.name, objects)
            paused = await pause_scaled_objects(self._api, scaled)
            if paused:
                log.info("scaled objects paused", **self._where(action), scaled_objects=paused)
            return
        hpa = hpa_of(action.namespace, action.name, objects)
        if hpa is None or action.step is None:
            return
        written = await lower_hpa(
            self._api, hpa, before=len(action.step.pods), replicas=action.step.replicas
        )
        if written is not None:
            bounds, original = written
            log.info(
                "hpa bounds lowered",
                **self._where(action),
                hpa=hpa.name,
                min_replicas=bounds.min_replicas,
                max_replicas=bounds.max_replicas,
                recorded=original.record(),
            )

    async def _report_left_behind(self, result: ActionResult) -> ActionResult:
        """The deleted color's HPAs, PDBs and ScaledObjects that are not owned by its
        Deployment (deployed otherwise than with `rainbowd deploy -f`), so the garbage
        collector leaves them, targeting nothing: a Warning Event `LeftBehind` names them."""
        action = result.action
        objects = (self.objects() or {}).get(action.namespace, ())
        labels = {self.app_label: action.app, self.color_label: action.color}
        left = sorted(
            f"{o.kind.value} {o.name}"
            for o in objects
            if action.uid not in o.owner_uids
            and (o.target == action.name if o.kind is not ObjectKind.PDB else o.selects(labels))
        )
        if not left:
            return result
        note = (
            f"{action.name} deleted; left behind, with no ownerReference to it: "
            f"{', '.join(left)} (delete them; `rainbowd deploy -f` creates a color's own "
            "with one, so they go with it)"
        )
        log.warning("objects left behind", **self._where(action), objects=left)
        await self._on_deployment(
            action.namespace,
            action.name,
            action.uid,
            type="Warning",
            reason="LeftBehind",
            note=note,
            action="Delete",
        )
        return dataclasses.replace(result, left_behind=tuple(left))

    @staticmethod
    def _where(action: Action) -> dict[str, str]:
        return {"namespace": action.namespace, "deployment": action.name}

    async def _set_costs(self, action: Action) -> None:
        """Each pod's deletion cost, as the step planned it; raises KubeError if any fails."""
        assert action.step is not None
        limit = asyncio.Semaphore(POD_PATCH_CONCURRENCY)

        async def patch(name: str, cost: int) -> None:
            body = {"metadata": {"annotations": {POD_DELETION_COST: str(cost)}}}
            path = resource_path("v1", "pods", namespace=action.namespace, name=name)
            async with limit:
                if self.limiter is not None:
                    await self.limiter.acquire(urgent=True)
                await request_json(self._api, "PATCH", path, body=body, content_type=MERGE_PATCH)

        await asyncio.gather(*(patch(n, c) for n, c in sorted(action.step.costs.items())))

    async def _refuse(self, action: Action, error: str) -> ActionResult:
        result = ActionResult(action, ActionOutcome.CONFLICT, error)
        log.warning(
            "action refused", **self._fields(action, result.outcome), dry_run=False, error=error
        )
        await self._emit(action, result.outcome, f"{action.message} ({error})")
        return result

    async def _emit(self, action: Action, outcome: ActionOutcome, note: str) -> None:
        """The action's Event on its Deployment; a Rollout color's on its ReplicaSet and on the
        Rollout (where `kubectl argo rollouts get` users look)."""
        fields: dict[str, Any] = {
            "type": event_type(action, outcome),
            "reason": event_reason(action, outcome),
            "note": note,
            "action": action.kind.value.capitalize(),
        }
        if action.workload is not WorkloadKind.ROLLOUT:
            await self._on_deployment(action.namespace, action.name, action.uid, **fields)
            return
        await self._on_deployment(
            action.namespace, action.name, action.uid, kind="ReplicaSet", **fields
        )
        if action.rollout:
            await self._recorder.emit(
                kind="Rollout",
                api_version="argoproj.io/v1alpha1",
                namespace=action.namespace,
                name=action.rollout,
                uid=action.rollout_uid,
                **fields,
            )

    async def _on_deployment(
        self,
        namespace: str,
        name: str,
        uid: str,
        *,
        type: EventType,
        reason: str,
        note: str,
        action: str,
        kind: str = "Deployment",
    ) -> None:
        """One Event regarding a Deployment (or a Rollout color's ReplicaSet, `kind`)."""
        await self._recorder.emit(
            kind=kind,
            api_version="apps/v1",
            namespace=namespace,
            name=name,
            uid=uid,
            type=type,
            reason=reason,
            note=note,
            action=action,
        )

    def _skip(self, action: Action, why: str, *, dry_run: bool) -> ActionResult:
        if why == "deferred":
            log.debug("action deferred", deployment=action.name, namespace=action.namespace)
            return ActionResult(action, ActionOutcome.SKIPPED)
        log.info(
            "action skipped",
            **self._fields(action, ActionOutcome.SKIPPED),
            dry_run=dry_run,
            why=why,
        )
        return ActionResult(action, ActionOutcome.SKIPPED)

    @staticmethod
    def _fields(action: Action, outcome: ActionOutcome) -> dict[str, Any]:
        return {
            "namespace": action.namespace,
            "app": action.app,
            "color": action.color,
            "deployment": action.name,
            "action": action.kind.value,
            "reason": action.reason.value,
            "connections": action.connections,
            "outcome": outcome.value,
            "message": action.message,
        }

    async def _perform(self, action: Action) -> ActionResult:
        # A disruptive action without its preconditions could land on whatever now bears the
        # name; that is a planning bug, and refusing it costs one cycle at most.
        if action.disruptive and not action.resource_version:
            return ActionResult(
                action, ActionOutcome.ERROR, "no resourceVersion to use as precondition"
            )
        if action.kind is ActionKind.DELETE and not action.uid:
            return ActionResult(action, ActionOutcome.ERROR, "no uid to use as precondition")
        try:
            async with asyncio.timeout(self.timeout):
                if action.kind is ActionKind.ANNOTATE or (
                    action.kind is ActionKind.SCALE and action.workload is WorkloadKind.ROLLOUT
                ):
                    # A Rollout color's scale-down: its deadline, with the bookkeeping.
                    await self._annotate(action, action.resource_version)
                elif action.workload is WorkloadKind.ROLLOUT:
                    return ActionResult(
                        action,
                        ActionOutcome.ERROR,
                        f"a Rollout color is only annotated, never a {action.kind} (a bug)",
                    )
                elif action.kind is ActionKind.SCALE:
                    await self._through_autoscalers(action)
                    await self._scale_down(action)
                elif action.kind is ActionKind.DELETE:
                    await self._delete(action)
                elif action.kind is ActionKind.CONSOLIDATE:
                    # Costs first: the /scale is what makes the controller pick pods.
                    await self._set_costs(action)
                    await self._through_autoscalers(action)
                    await self._scale_down(action)
                else:  # pragma: no cover - a new ActionKind without executor support
                    return ActionResult(action, ActionOutcome.ERROR, f"unknown kind {action.kind}")
        except NotFound as exc:
            return ActionResult(
                action, ActionOutcome.GONE, None if action.kind is ActionKind.DELETE else str(exc)
            )
        except Conflict as exc:
            return ActionResult(action, ActionOutcome.CONFLICT, str(exc))
        except KubeError as exc:
            return ActionResult(action, ActionOutcome.ERROR, str(exc))
        except TimeoutError:
            return ActionResult(action, ActionOutcome.ERROR, f"timed out after {self.timeout:g}s")
        except Exception as exc:  # a bug must cost one action, not the cycle
            log.exception("action crashed", namespace=action.namespace, deployment=action.name)
            return ActionResult(action, ActionOutcome.ERROR, f"{type(exc).__name__}: {exc}")
        return ActionResult(action, ActionOutcome.OK)

    async def _annotate(self, action: Action, resource_version: str) -> dict[str, Any]:
        """Merge-patch the action's annotations; the resourceVersion in the body is a
        precondition. Returns the Deployment as written."""
        # None becomes JSON null, which a merge patch reads as "remove".
        body = {
            "metadata": {**_precondition(resource_version), "annotations": dict(action.annotations)}
        }
        return await request_json(
            self._api, "PATCH", _deployment_path(action), body=body, content_type=MERGE_PATCH
        )

    async def _scale_down(self, action: Action) -> None:
        """To 0, or to the consolidation step's replicas; its annotations written first."""
        if not action.annotations:
            await self._scale(action, action.resource_version)
            return
        written = await self._annotate(action, action.resource_version)
        meta = written.get("metadata", {})
        resource_version = str(meta.get("resourceVersion") or "")
        generation = meta.get("generation")
        # A Deployment's generation goes up when its annotations change, so the patch above
        # makes the deployment controller write status.observedGeneration right away, which
        # moves the resourceVersion under the scale below. The generation is the better
        # precondition from here on: it moves with any change to the spec or annotations,
        # never with status. So on a conflict, look again, and scale at the fresh
        # resourceVersion only if the uid and generation are still the ones just written.
        for _ in range(SCALE_ATTEMPTS - 1):
            try:
                await self._scale(action, resource_version)
                return
            except Conflict:
                current = await request_json(self._api, "GET", _deployment_path(action))
                now = current.get("metadata", {})
                if now.get("uid") != action.uid or now.get("generation") != generation:
                    raise
                resource_version = str(now.get("resourceVersion") or "")
                log.debug(
                    "scale retried",
                    namespace=action.namespace,
                    deployment=action.name,
                    generation=generation,
                    resource_version=resource_version,
                )
        await self._scale(action, resource_version)

    async def _scale(self, action: Action, resource_version: str) -> None:
        # Through /scale, never spec.replicas on the Deployment itself: the scale subresource
        # cannot touch the pod template, and a template change would roll every pod and cut
        # every connection the color still holds. The Scale's resourceVersion is the
        # Deployment's, so it is a precondition here too.
        replicas = 0 if action.step is None else action.step.replicas
        body = {"metadata": _precondition(resource_version), "spec": {"replicas": replicas}}
        await request_json(
            self._api,
            "PATCH",
            _deployment_path(action, "scale"),
            body=body,
            content_type=MERGE_PATCH,
        )

    async def _delete(self, action: Action) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": action.uid, "resourceVersion": action.resource_version},
            # The ReplicaSets and pods go too, but the call returns without waiting for them.
            "propagationPolicy": "Background",
        }
        await request_json(self._api, "DELETE", _deployment_path(action), body=body)

    async def report_warnings(self, plan: Plan, snapshot: Snapshot, warnings: Iterable[str]) -> int:
        """A Warning Event `AnnotationWarning` on the Deployment each of the plan's `warnings`
        is about (they read `<namespace>/<name>: ...`), so `kubectl describe` shows what is
        wrong with a value someone wrote, and what rainbowd does about it (a malformed stamp
        it re-stamps also has that action's Event); the caller passes each warning once.
        Nothing is written in dry run. The number of Events written."""
        if plan.dry_run or self.dry_run:
            return 0
        reports: list[tuple[Deployment, str]] = []
        for warning in warnings:
            where, _, _ = warning.partition(": ")
            namespace, _, name = where.partition("/")
            ns = snapshot.namespaces.get(namespace)
            found = [d for d in ns.deployments if d.name == name] if ns is not None else []
            if found:
                reports.append((found[0], warning))
        limit = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def report(deployment: Deployment, warning: str) -> None:
            async with limit:
                await self._on_deployment(
                    deployment.namespace,
                    deployment.name,
                    deployment.uid,
                    type="Warning",
                    reason="AnnotationWarning",
                    note=warning,
                    action="Report",
                    kind="Deployment" if deployment.rollout is None else "ReplicaSet",
                )

        await asyncio.gather(*(report(d, w) for d, w in reports))
        return len(reports)

    async def _annotate_pod(
        self, pod: PodMark, key: str, value: str | None, limit: asyncio.Semaphore
    ) -> bool | None:
        """One annotation of one pod set (None: removed); None when the pod is gone, False
        when the write failed (logged)."""
        body = {"metadata": {"annotations": {key: value}}}
        path = resource_path("v1", "pods", namespace=pod.namespace, name=pod.name)
        async with limit:
            if self.limiter is not None:
                await self.limiter.acquire()
            try:
                async with asyncio.timeout(self.timeout):
                    await request_json(
                        self._api, "PATCH", path, body=body, content_type=MERGE_PATCH
                    )
            except NotFound:
                return None
            except (KubeError, TimeoutError) as exc:
                log.warning(
                    "pod not annotated",
                    namespace=pod.namespace,
                    app=pod.app,
                    color=pod.color,
                    pod=pod.name,
                    annotation=key,
                    error=str(exc) or "timeout",
                )
                return False
        return True

    async def keep_costs(
        self, plan: Plan, snapshot: Snapshot, pods: Iterable[PodMark] | None
    ) -> int:
        """Keep each pod of a draining color's `pod-deletion-cost` at its connections
        (`consolidation.costs_to_keep`), so a scale-down made by anyone else (its HPA, a
        person) removes its idle pods first; only pods whose cost changed are patched. The
        number of pods patched. Nothing in dry run, or before the pods are listed."""
        if pods is None or plan.dry_run or self.dry_run:
            return 0
        wanted = costs_to_keep(plan, snapshot)
        if not wanted:
            return 0
        todo = [
            (pod, wanted[key])
            for pod in pods
            if (key := (pod.namespace, pod.name)) in wanted
            and pod.cost != str(wanted[key])
            and self._costing.get(key) != (pod.cost, wanted[key])
        ]
        limit = asyncio.Semaphore(POD_PATCH_CONCURRENCY)

        async def patch(pod: PodMark, cost: int) -> bool:
            ok = await self._annotate_pod(pod, POD_DELETION_COST, str(cost), limit)
            if ok:  # until the watch shows it, the same patch is not sent again
                self._costing[(pod.namespace, pod.name)] = (pod.cost, cost)
            return ok is True

        done = await asyncio.gather(*(patch(pod, cost) for pod, cost in todo))
        if len(self._costing) > _MARKING_MEMORY:
            self._costing.clear()
        if any(done):
            log.info("pod costs kept", pods=sum(done))
        return sum(done)

    async def mark_pods(self, plan: Plan, pods: Iterable[PodMark] | None) -> int:
        """Keep every pod of a retired color marked `rainbowd.io/phase: retired` and no pod of
        a live or pending color marked; the number of pods patched.

        `pods` comes from a watch, so a pod created later for a retired color (a restart, a
        reschedule) is marked at the next cycle, and a color in line costs no request at all.
        Nothing is done in dry run, or when the pods are not known yet (None).
        """
        if pods is None or plan.dry_run or self.dry_run:
            return 0
        wanted: dict[tuple[str, str, str], str | None] = {}
        for app in plan.apps:
            for color in app.colors:
                if color.rule is None:
                    continue  # unmanaged: never touched
                retired = color.state not in (State.LIVE, State.PENDING)
                wanted[(app.namespace, app.app, color.color)] = RETIRED_PHASE if retired else None
        todo: list[tuple[PodMark, str | None]] = []
        marking = self._marking
        for pod in pods:
            key = (pod.namespace, pod.app, pod.color)
            if key not in wanted:
                continue
            name = (pod.namespace, pod.name)
            if name in marking and marking[name] == pod.phase:
                del marking[name]  # the watch caught up with the patch
            value = wanted[key]
            if pod.phase != value and marking.get(name, pod.phase) != value:
                todo.append((pod, value))
        if not todo:
            return 0
        limit = asyncio.Semaphore(POD_PATCH_CONCURRENCY)

        async def patch(pod: PodMark, value: str | None) -> bool:
            ok = await self._annotate_pod(pod, PHASE, value, limit)
            if ok is None:
                return True  # the pod went away meanwhile: nothing left to mark
            if ok:  # the watch shows the mark a moment later; until then, not patched again
                self._marking[(pod.namespace, pod.name)] = value
            return ok

        done = await asyncio.gather(*(patch(pod, value) for pod, value in todo))
        for (pod, value), ok in zip(todo, done, strict=True):
            if not ok:
                continue  # "pod not annotated" was logged with the error
            log.info(
                "pod annotated",
                namespace=pod.namespace,
                app=pod.app,
                color=pod.color,
                pod=pod.name,
                phase=value,
            )
        if len(self._marking) > _MARKING_MEMORY:
            self._marking.clear()
        return sum(done)
