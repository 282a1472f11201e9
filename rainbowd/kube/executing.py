"""Applies a Plan to the cluster: annotation stamps, scale-downs and deletes of Deployments.

Each action carries the resourceVersion (and uid) the planner saw, sent as a precondition, so an
action never lands on a Deployment that changed since: the apiserver answers 409 and the next
cycle plans again from fresh state. Each applied action gets one log line and one Event; a
scale-down or delete gets them before the call, so a crash cannot leave it unrecorded.

Every applied action, routine bookkeeping included (the live-at stamp), gets an Event: the planner
only plans transitions, so a color gets a handful of Events in its whole life, and `kubectl
describe deployment` then tells the full story of the color (MarkedLive, MarkedRetired,
DrainStarted, ScaledDown...). Skipped actions (dry run, paused, stopping) get no Event.

Pods of a retired color are kept annotated `rainbowd.io/phase: retired` (`mark_pods`, each
cycle, from the cache's watch of the colors' pods), so the app can read it through the downward
API (and, say, ask clients to reconnect); pods of a live color lose the mark.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    ACTION_EVENTS,
    PHASE,
    REASONS,
    Action,
    ActionKind,
    Plan,
    Severity,
    State,
)
from rainbowd.kube.caching import PodMark
from rainbowd.kube.clients import (
    MERGE_PATCH,
    Conflict,
    KubeError,
    NotFound,
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
# Pods patched but not yet seen marked through the watch, remembered so a lagging watch does not
# get them patched twice; forgotten wholesale past this size (a second patch is harmless).
_MARKING_MEMORY = 10_000


class Outcome(enum.StrEnum):
    OK = "ok"
    GONE = "gone"  # the Deployment no longer exists: for a delete, already done
    CONFLICT = "conflict"  # it changed since the snapshot (precondition failed): re-plan
    ERROR = "error"
    SKIPPED = "skipped"  # not attempted: dry run, paused, or stopping


@dataclass(frozen=True)
class ActionResult:
    action: Action
    outcome: Outcome
    error: str | None = None


def event_reason(action: Action, outcome: Outcome) -> str:
    """The CamelCase Event reason for what happened to `action`."""
    own = REASONS[action.reason].event
    if action.kind is ActionKind.ANNOTATE and own is not None:
        done, attempt = own
    else:
        done, attempt = ACTION_EVENTS[action.kind]
    if outcome is Outcome.OK:
        return done
    if outcome is Outcome.GONE:
        return "AlreadyDeleted"
    if outcome is Outcome.CONFLICT:
        return f"{attempt}Conflict"
    return f"{attempt}Failed"


def event_type(action: Action, outcome: Outcome) -> EventType:
    if outcome in (Outcome.CONFLICT, Outcome.ERROR):
        return "Warning"
    if outcome is Outcome.OK and REASONS[action.reason].severity is Severity.WARNING:
        return "Warning"
    return "Normal"


def _precondition(resource_version: str) -> dict[str, str]:
    # An empty resourceVersion in a patch would mean "whatever the current one is", which is no
    # precondition at all; leave it out so that is visible rather than implied.
    return {"resourceVersion": resource_version} if resource_version else {}


def _deployment_path(action: Action, subresource: str = "") -> str:
    path = resource_path("apps/v1", "deployments", namespace=action.namespace, name=action.name)
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
    ) -> None:
        """`timeout` (seconds) bounds one action's API calls, so a hung apiserver cannot hold
        the cycle (and a SIGTERM waiting on it) forever; 30 s is far above a healthy answer."""
        self._api = api
        self._recorder = recorder
        self.app_label = app_label
        self.color_label = color_label
        self.dry_run = dry_run
        self.timeout = timeout
        self._marking: dict[tuple[str, str], str | None] = {}

    async def apply(self, plan: Plan, *, stop: asyncio.Event | None = None) -> list[ActionResult]:
        """Apply the plan's actions in order; one result per action, in the same order.

        Errors are reported in the results, never raised (except cancellation): one failed
        action does not stop the others. `stop` is looked at between actions: the action under
        way finishes, the rest are skipped.
        """
        results: list[ActionResult] = []
        dry_run = plan.dry_run or self.dry_run
        for action in plan.actions:
            if dry_run:
                results.append(self._skip(action, "dry-run", dry_run=True))
            elif plan.paused and action.disruptive:
                # The planner holds cleanups when paused; this is the second lock on that door.
                # Stamps still go through: they keep the record of when colors retired true.
                results.append(self._skip(action, "paused", dry_run=False))
            elif stop is not None and stop.is_set():
                results.append(self._skip(action, "stopping", dry_run=False))
            else:
                results.append(await self._apply_one(action))
        return results

    async def _apply_one(self, action: Action) -> ActionResult:
        """Apply one action now, whatever dry-run says; log it and record its Event.

        A scale-down or delete is announced first (its log line and its Event, as if done), so
        a crash (kill -9) right after the call still leaves the record of what was done; if
        the call then fails, a Warning Event with the error follows.
        """
        announced = action.disruptive
        if announced:
            log.info("action starting", **self._fields(action, Outcome.OK), dry_run=False)
            await self._emit(action, Outcome.OK, action.message)
        result = await self._perform(action)
        fields = self._fields(action, result.outcome)
        if result.outcome in (Outcome.OK, Outcome.GONE):
            log.info("action applied", **fields, dry_run=False)
        else:
            log.warning("action applied", **fields, dry_run=False, error=result.error)
        if announced and (
            result.outcome is Outcome.OK
            or (result.outcome is Outcome.GONE and action.kind is ActionKind.DELETE)
        ):
            return result  # the announcement said it all
        note = action.message
        if result.error:
            note = f"{note} ({result.outcome}: {result.error})"
        await self._emit(action, result.outcome, note)
        return result

    async def _emit(self, action: Action, outcome: Outcome, note: str) -> None:
        await self._recorder.emit(
            kind="Deployment",
            api_version="apps/v1",
            namespace=action.namespace,
            name=action.name,
            uid=action.uid,
            type=event_type(action, outcome),
            reason=event_reason(action, outcome),
            note=note,
            action=action.kind.value.capitalize(),
        )

    def _skip(self, action: Action, why: str, *, dry_run: bool) -> ActionResult:
        log.info(
            "action skipped", **self._fields(action, Outcome.SKIPPED), dry_run=dry_run, why=why
        )
        return ActionResult(action, Outcome.SKIPPED)

    @staticmethod
    def _fields(action: Action, outcome: Outcome) -> dict[str, Any]:
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
            return ActionResult(action, Outcome.ERROR, "no resourceVersion to use as precondition")
        if action.kind is ActionKind.DELETE and not action.uid:
            return ActionResult(action, Outcome.ERROR, "no uid to use as precondition")
        try:
            async with asyncio.timeout(self.timeout):
                if action.kind is ActionKind.ANNOTATE:
                    await self._annotate(action, action.resource_version)
                elif action.kind is ActionKind.SCALE:
                    await self._scale_down(action)
                elif action.kind is ActionKind.DELETE:
                    await self._delete(action)
                else:  # pragma: no cover - a new ActionKind without executor support
                    return ActionResult(action, Outcome.ERROR, f"unknown kind {action.kind}")
        except NotFound as exc:
            return ActionResult(
                action, Outcome.GONE, None if action.kind is ActionKind.DELETE else str(exc)
            )
        except Conflict as exc:
            return ActionResult(action, Outcome.CONFLICT, str(exc))
        except KubeError as exc:
            return ActionResult(action, Outcome.ERROR, str(exc))
        except TimeoutError:
            return ActionResult(action, Outcome.ERROR, f"timed out after {self.timeout:g}s")
        except Exception as exc:  # a bug must cost one action, not the cycle
            log.exception("action crashed", namespace=action.namespace, deployment=action.name)
            return ActionResult(action, Outcome.ERROR, f"{type(exc).__name__}: {exc}")
        return ActionResult(action, Outcome.OK)

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
        if not action.annotations:
            await self._scale_to_zero(action, action.resource_version)
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
                await self._scale_to_zero(action, resource_version)
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
        await self._scale_to_zero(action, resource_version)

    async def _scale_to_zero(self, action: Action, resource_version: str) -> None:
        # Through /scale, never spec.replicas on the Deployment itself: the scale subresource
        # cannot touch the pod template, and a template change would roll every pod and cut
        # every connection the color still holds. The Scale's resourceVersion is the
        # Deployment's, so it is a precondition here too.
        body = {"metadata": _precondition(resource_version), "spec": {"replicas": 0}}
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
            body = {"metadata": {"annotations": {PHASE: value}}}
            path = resource_path("v1", "pods", namespace=pod.namespace, name=pod.name)
            fields = {"namespace": pod.namespace, "app": pod.app, "color": pod.color}
            async with limit:
                try:
                    async with asyncio.timeout(self.timeout):
                        await request_json(
                            self._api, "PATCH", path, body=body, content_type=MERGE_PATCH
                        )
                except NotFound:
                    return True  # the pod went away meanwhile: nothing left to mark
                except (KubeError, TimeoutError) as exc:
                    log.warning(
                        "pod not annotated", **fields, pod=pod.name, error=str(exc) or "timeout"
                    )
                    return False
            # The watch shows the mark a moment later; until then, do not patch it again.
            self._marking[(pod.namespace, pod.name)] = value
            return True

        done = await asyncio.gather(*(patch(pod, value) for pod, value in todo))
        for pod, value in todo:
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
