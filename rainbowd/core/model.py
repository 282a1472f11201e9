"""The data rainbowd decides on and the decisions it makes.

A `Snapshot` is what the cluster and Prometheus looked like at one instant; a `Plan` is what the
planner wants done about it. Both are immutable. Nothing here performs I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from rainbowd.core.notes import Note

# Annotations rainbowd reads and writes on Deployments (and on a Rollout's ReplicaSets). They are
# the only state that must survive a restart, so they live on the objects themselves.
ANNOTATION_PREFIX = "rainbowd.io/"
LIVE_AT = "rainbowd.io/live-at"
RETIRED_AT = "rainbowd.io/retired-at"
DRAINED_SINCE = "rainbowd.io/drained-since"
ORIGINAL_REPLICAS = "rainbowd.io/original-replicas"
PROTECT = "rainbowd.io/protect"
# Written by `rainbowd hold`: never scale or delete before this RFC 3339 time (malformed: held).
HOLD_UNTIL = "rainbowd.io/hold-until"
HOLD_REASON = "rainbowd.io/hold-reason"
# When rainbowd saw a color it had scaled to 0 scaled back up: no rule acts on it for
# scaleUpGrace from then, and its drain starts over with the replicas that now exist.
SCALED_UP_AT = "rainbowd.io/scaled-up-at"
# The Deployment's generation once rainbowd's scale-down bookkeeping is written, before /scale:
# replicas > 0 at exactly that generation is a scale-down cut short (a crash between the two
# calls), not a user scaling the color back up.
SCALE_DOWN_GENERATION = "rainbowd.io/scale-down-generation"
# When rainbowd scaled down a color still holding connections (a forced rule): the
# maxDisruptions budget is counted from these, so it survives restarts.
DISRUPTED_AT = "rainbowd.io/disrupted-at"
# Written on the pods of retired colors, readable by the app through the downward API.
PHASE = "rainbowd.io/phase"
# Consolidation's record, written with each step before its /scale: when, and the replicas
# before it. replicas equal to consolidated-from is a step cut short (a crash between the two
# calls), planned again at once; fewer is a step done, the next one `every` later.
CONSOLIDATED_AT = "rainbowd.io/consolidated-at"
CONSOLIDATED_FROM = "rainbowd.io/consolidated-from"
# When a consolidation step last removed pods holding connections (stepDown.every counts).
STEPPED_DOWN_AT = "rainbowd.io/stepped-down-at"
# A color's retired bookkeeping: what rainbowd clears when the color is live again.
RETIREMENT = (
    RETIRED_AT,
    DRAINED_SINCE,
    ORIGINAL_REPLICAS,
    SCALED_UP_AT,
    SCALE_DOWN_GENERATION,
    CONSOLIDATED_AT,
    CONSOLIDATED_FROM,
    STEPPED_DOWN_AT,
)
# The Kubernetes pod annotation the ReplicaSet controller ranks pods by when it scales down:
# lowest cost first (among pods all running and ready).
POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# On a color's HorizontalPodAutoscaler: its bounds before rainbowd lowered them with a
# consolidation step (`{"minReplicas": 4, "maxReplicas": 10}`), what a rollback restores.
HPA_BOUNDS = "rainbowd.io/hpa-bounds"
# KEDA's documented pause: the ScaledObject's target is scaled to this many and left there.
KEDA_PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
KEDA_PAUSED = "autoscaling.keda.sh/paused"
# On a ScaledObject rainbowd paused when it scaled its color to 0: a rollback lifts only a
# pause rainbowd set, never one someone else did.
PAUSED_BY_RAINBOWD = "rainbowd.io/paused"
# Argo Rollouts: the label naming a Rollout's ReplicaSet (its pod template's hash), which the
# Rollout's active and preview Services select by; it is a Rollout color's color.
ROLLOUT_HASH = "rollouts-pod-template-hash"
# Argo Rollouts' own annotation on an old ReplicaSet (unprefixed, one per ReplicaSet): its
# controller scales the ReplicaSet to 0 once this RFC 3339 time has passed. rainbowd acts on a
# Rollout's colors only through it: to now when drained, kept ahead of now while held.
SCALE_DOWN_DEADLINE = "scale-down-deadline"
# Argo Rollouts' revision of a Rollout's ReplicaSet: the order its scaleDownDelayRevisionLimit
# counts old ReplicaSets in (a rollback gives an old ReplicaSet a new revision).
ROLLOUT_REVISION = "rollout.argoproj.io/revision"


class WorkloadKind(enum.StrEnum):
    """What a color is: a Deployment of its own, or a ReplicaSet of an Argo Rollout."""

    DEPLOYMENT = "Deployment"
    ROLLOUT = "Rollout"


class State(enum.StrEnum):
    """Where a color stands in its life, in the project's vocabulary."""

    LIVE = "live"
    PENDING = "pending"
    RETIRED = "retired"  # retired, but not evaluated this cycle (app blocked or unmanaged)
    DRAINING = "draining"
    DRAINED = "drained"
    SCALED_DOWN = "scaled-down"
    PROTECTED = "protected"
    UNKNOWN_CONNECTIONS = "unknown-connections"


class Reason(enum.StrEnum):
    """Why an action was planned."""

    OBSERVED_LIVE = "observed-live"  # stamp live-at
    LIVE_AGAIN = "live-again"  # a retired color became live: clear retired-at/drained-since
    OBSERVED_RETIRED = "observed-retired"  # stamp retired-at
    MALFORMED_ANNOTATION = "malformed-annotation"  # re-stamp an unparsable annotation as now
    ABANDONED = "abandoned"  # a pending color never promoted for abandonedAfter
    DRAIN_STARTED = "drain-started"  # stamp drained-since
    DRAIN_RESET = "drain-reset"  # connections above floor or unknown again: clear drained-since
    SCALED_UP = "scaled-up"  # a color rainbowd scaled to 0 was scaled back up: a new drain
    # With action delete, a forced scale-down is a scale-down first (its disrupted-at stamp
    # keeps the disruption budget counted across restarts), deleted once the budget's window
    # has passed.
    DISRUPTION_RECORDED = "disruption-recorded"
    DRAINED = "drained"
    MAX_RETIRED_AGE = "max-retired-age"
    MAX_COLORS = "max-colors"
    KEEP_SCALED_DOWN = "keep-scaled-down"
    IDLE_PODS = "idle-pods"  # consolidate: a draining color gives back its idle pods
    STEP_DOWN = "step-down"  # stepDown: and its least-connected ones, spending the budget
    # A Rollout color held (connections, protect, a hold): its scale-down-deadline moved ahead.
    DEADLINE_KEPT = "deadline-kept"


class Severity(enum.StrEnum):
    """An applied action's Event type."""

    NORMAL = "Normal"
    WARNING = "Warning"  # it succeeded, but reports a problem someone should fix


@dataclass(frozen=True, slots=True)
class ReasonInfo:
    """Everything said about one `Reason`: adding a reason is one row of `REASONS`."""

    words: str  # why, in the action message (a stamp's) and the docs
    # The Event reasons: what happened, and what was attempted (a failed attempt is reported as
    # `<attempt>Failed` or `<attempt>Conflict`). None: the action kind's (`ACTION_EVENTS`), as
    # for the cleanups, whose Event says what was done (ScaledDown, Deleted).
    event: tuple[str, str] | None = None
    severity: Severity = Severity.NORMAL


REASONS: Mapping[Reason, ReasonInfo] = {
    Reason.OBSERVED_LIVE: ReasonInfo("first seen live", ("MarkedLive", "MarkLive")),
    Reason.LIVE_AGAIN: ReasonInfo("live again (rolled back to)", ("LiveAgain", "MarkLiveAgain")),
    Reason.OBSERVED_RETIRED: ReasonInfo("first seen retired", ("MarkedRetired", "MarkRetired")),
    Reason.MALFORMED_ANNOTATION: ReasonInfo(
        "unparsable annotation re-stamped as now",
        ("MalformedAnnotation", "RestampAnnotation"),
        Severity.WARNING,
    ),
    Reason.ABANDONED: ReasonInfo(
        "pending for longer than abandonedAfter, never promoted", ("Abandoned", "MarkAbandoned")
    ),
    Reason.DRAIN_STARTED: ReasonInfo(
        "connections at or below the floor", ("DrainStarted", "MarkDrainStarted")
    ),
    Reason.DRAIN_RESET: ReasonInfo(
        "the drain must be continuous", ("DrainReset", "MarkDrainReset")
    ),
    Reason.SCALED_UP: ReasonInfo(
        "scaled back up from 0: a new drain, with the replicas that now exist",
        ("ScaledBackUp", "MarkScaledBackUp"),
    ),
    Reason.DISRUPTION_RECORDED: ReasonInfo(
        "scaled down to record a disruption; deleted once maxDisruptions.per has passed"
    ),
    Reason.DRAINED: ReasonInfo("at or below the floor for drainHold, retired for minRetiredAge"),
    Reason.MAX_RETIRED_AGE: ReasonInfo("retired for longer than maxRetiredAge"),
    Reason.MAX_COLORS: ReasonInfo("more colors with replicas than maxColors"),
    Reason.KEEP_SCALED_DOWN: ReasonInfo("scaled down, beyond the newest keepScaledDown"),
    Reason.IDLE_PODS: ReasonInfo("pods holding no connections given back (consolidate)"),
    Reason.STEP_DOWN: ReasonInfo("the least-connected pods removed too (stepDown)"),
    Reason.DEADLINE_KEPT: ReasonInfo(
        "still held: Argo Rollouts' scale-down-deadline kept ahead of now",
        ("DeadlineKept", "KeepDeadline"),
    ),
}
assert REASONS.keys() == set(Reason), "every Reason has its row in REASONS"


class BlockReason(enum.StrEnum):
    """Why the planner does nothing at all for an app."""

    NO_LIVE_COLOR = "no-live-color"
    LIVE_NOT_AVAILABLE = "live-not-available"


class ActionKind(enum.StrEnum):
    ANNOTATE = "annotate"
    SCALE = "scale"
    DELETE = "delete"
    # Scale a draining color to fewer pods (never 0), its pods' deletion costs set first.
    CONSOLIDATE = "consolidate"


# The Event reasons of an action whose `Reason` has none of its own: (done, attempted).
ACTION_EVENTS: Mapping[ActionKind, tuple[str, str]] = {
    ActionKind.ANNOTATE: ("Annotated", "Annotate"),
    ActionKind.SCALE: ("ScaledDown", "ScaleDown"),
    ActionKind.DELETE: ("Deleted", "Delete"),
    ActionKind.CONSOLIDATE: ("Consolidated", "Consolidate"),
}


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Rollout:
    """The parts of an Argo Rollout (argoproj.io/v1alpha1) its colors need: who it is, the
    labels rules select it by, and its blueGreen strategy's Services and scale-down limits."""

    namespace: str
    name: str
    uid: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    # spec.strategy.blueGreen: "" for a Rollout of another strategy (canary), never managed.
    active_service: str = ""
    preview_service: str = ""
    scale_down_delay: int = 30  # scaleDownDelaySeconds (Argo Rollouts' default: 30)
    revision_limit: int | None = None  # scaleDownDelayRevisionLimit; None: no limit

    @property
    def blue_green(self) -> bool:
        return bool(self.active_service)

    def selecting(self, labels: Mapping[str, str], services: Mapping[str, Service]) -> Selected:
        """Which of its Services select the pod-template `labels` (`services` by name): the one
        definition of a Rollout color's live (its active Service) and pending (its preview)."""
        active = services.get(self.active_service)
        live = active.name if active is not None and active.selects(labels) else None
        preview = services.get(self.preview_service) if self.preview_service else None
        previewed = live is None and preview is not None and preview.selects(labels)
        return Selected(live, previewed)


class Selected(NamedTuple):
    """What a Rollout's Services make of one of its colors."""

    live: str | None  # the active Service's name when it selects the color
    previewed: bool  # the preview Service selects it (and the active one does not)


@dataclass(frozen=True, slots=True)
class Deployment:
    """The parts of a Deployment rainbowd needs; built once per watch event, not per cycle.

    A color of an Argo Rollout (`kind` ROLLOUT) is one of its ReplicaSets in the same model:
    its `labels` are the Rollout's (what rules select), its `template_labels` the ReplicaSet's
    pod template's, its color the `rollouts-pod-template-hash`, and `rollout` the Rollout."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    created_at: datetime
    labels: Mapping[str, str]
    template_labels: Mapping[str, str]
    # Only the rainbowd.io/ annotations: the rest is never read and would cost memory.
    annotations: Mapping[str, str]
    replicas: int  # spec.replicas
    ready_replicas: int = 0
    available_replicas: int = 0
    conditions: tuple[Condition, ...] = ()
    generation: int = 0
    observed_generation: int = 0
    updated_replicas: int = 0  # status.updatedReplicas: pods of the current pod template
    kind: WorkloadKind = WorkloadKind.DEPLOYMENT
    # A Rollout color: the Rollout's name as its controller ownerReference names it, then the
    # Rollout itself once joined (rainbowd/core/objects.py `rollout_colors`).
    owner: str = ""
    rollout: Rollout | None = None

    def color_of(self, color_label: str) -> str | None:
        """The color: the color label of the pod template, or a Rollout color's hash."""
        if self.kind is WorkloadKind.ROLLOUT:
            return self.template_labels.get(ROLLOUT_HASH)
        return self.template_labels.get(color_label)

    @property
    def annotating_bumps_generation(self) -> bool:
        """Whether an annotation change bumps metadata.generation: a Deployment's does, a
        ReplicaSet's does not (only its spec counts)."""
        return self.kind is WorkloadKind.DEPLOYMENT

    def condition(self, type_: str) -> Condition | None:
        for cond in self.conditions:
            if cond.type == type_:
                return cond
        return None

    @property
    def available(self) -> bool:
        """Available condition true, no progress deadline exceeded, and some pod available. A
        ReplicaSet has no Available condition: some pod available, no ReplicaFailure."""
        if self.kind is WorkloadKind.ROLLOUT:
            failure = self.condition("ReplicaFailure")
            return self.available_replicas > 0 and (failure is None or failure.status != "True")
        cond = self.condition("Available")
        if cond is None or cond.status != "True":
            return False
        progressing = self.condition("Progressing")
        if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
            return False
        return self.available_replicas > 0

    @property
    def rolled_out(self) -> bool:
        """Available, and every wanted replica updated, ready and available at the spec the
        controller last saw: what a deploy waits for before it sends a color connections."""
        return (
            self.available
            and self.observed_generation >= self.generation
            and min(self.updated_replicas, self.ready_replicas, self.available_replicas)
            >= self.replicas
        )


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    selector: Mapping[str, str]

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether this Service sends new connections to pods with `labels`: its selector is
        not empty and is a subset of them."""
        return bool(self.selector) and self.selector.items() <= labels.items()


class PrometheusErrorCause(enum.StrEnum):
    """Why a connections query failed, in few enough classes to be a metric label. The Prometheus
    client sets it where the failure happens; metrics, logs and /status carry it unchanged."""

    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"  # connection refused/reset, DNS, TLS
    HTTP = "http"  # an error status without a Prometheus error envelope (a proxy, a 5xx page)
    QUERY = "query"  # Prometheus answered status=error, or warned of partial data
    BAD_RESPONSE = "bad-response"  # an answer rainbowd cannot decode


@dataclass(frozen=True, slots=True)
class Connections:
    """What Prometheus says a color holds: a number, or unknown with the cause."""

    value: float | None
    # How many distinct pods reported for the color (the coverage check compares it with the
    # ready replicas; a pod exporting several series counts once); None when the query cannot
    # tell (a free-form query).
    series: int | None = None
    cause: str = ""

    @property
    def known(self) -> bool:
        return self.value is not None

    @classmethod
    def unknown(cls, cause: str) -> Connections:
        return cls(value=None, series=None, cause=cause)


NO_SERIES = Connections.unknown("no series for this color")


@dataclass(frozen=True, slots=True)
class PodConnections:
    """A color's pods, each with the connections Prometheus reports for it (None: unknown,
    counted as busy), for consolidation; or why per-pod figures cannot be had (`unavailable`),
    in which case nothing is consolidated."""

    pods: Mapping[str, float | None] = field(default_factory=dict)
    unavailable: str | None = None


@dataclass(frozen=True, slots=True)
class PodStep:
    """One consolidation step: the color from `len(pods)` to `replicas` pods. The ReplicaSet
    controller removes the pods of lowest pod-deletion-cost first, so `costs` (set on every
    pod before the /scale) makes it remove `removed` and no other."""

    replicas: int
    pods: Mapping[str, float | None]  # every pod of the color and its connections, as planned
    removed: tuple[str, ...]  # the pods expected to go
    costs: Mapping[str, int]  # the pod-deletion-cost of each pod
    stepped: int = 0  # how many of `removed` hold connections (stepDown)


class ObjectKind(enum.StrEnum):
    """The objects that scale a color or guard its pods."""

    HPA = "HorizontalPodAutoscaler"  # autoscaling/v2
    SCALED_OBJECT = "ScaledObject"  # keda.sh/v1alpha1
    PDB = "PodDisruptionBudget"  # policy/v1


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    """One of a label selector's matchExpressions."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ColorObject:
    """An HPA or ScaledObject (its target named by `target`) or a PDB (its pods chosen by
    `match_labels` and `match_expressions`), as far as rainbowd acts on or reports them."""

    kind: ObjectKind
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    target: str = ""  # the Deployment of scaleTargetRef ("" when it names no Deployment)
    min_replicas: int | None = None
    max_replicas: int | None = None
    # PDB: None is a null selector (selects nothing); an empty one selects every pod.
    match_labels: Mapping[str, str] | None = None
    match_expressions: tuple[LabelRequirement, ...] = ()
    # Only rainbowd.io/ and autoscaling.keda.sh/ ones.
    annotations: Mapping[str, str] = field(default_factory=dict)
    owner_uids: tuple[str, ...] = ()  # metadata.ownerReferences

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether this PDB's selector selects pods with `labels`."""
        if self.match_labels is None:
            return False
        if not self.match_labels.items() <= labels.items():
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and not (present and labels[req.key] in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True

    def applies_to(self, deployment: Deployment) -> bool:
        """Whether it scales `deployment` (an HPA or ScaledObject) or guards its pods (a PDB)."""
        if self.namespace != deployment.namespace:
            return False
        if self.kind is ObjectKind.PDB:
            return self.selects(deployment.template_labels)
        return self.target == deployment.name


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    deployments: tuple[Deployment, ...] = ()
    services: tuple[Service, ...] = ()
    # Keyed by (app, color).
    connections: Mapping[tuple[str, str], Connections] = field(default_factory=dict)
    # Per-pod connections, only for the colors consolidation may step this cycle; by (app, color).
    pods: Mapping[tuple[str, str], PodConnections] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: datetime
    namespaces: Mapping[str, Namespace]

    def connections_for(self, namespace: str, app: str, color: str) -> Connections:
        ns = self.namespaces.get(namespace)
        if ns is None:
            return NO_SERIES
        return ns.connections.get((app, color), NO_SERIES)

    def pods_for(self, namespace: str, app: str, color: str) -> PodConnections | None:
        """The color's per-pod connections; None when they were not asked for this cycle."""
        ns = self.namespaces.get(namespace)
        return None if ns is None else ns.pods.get((app, color))


# Plan records are NamedTuples, not frozen dataclasses: plan() builds one per color each cycle
# and a frozen dataclass costs ~4 us to construct against ~1 us for a NamedTuple (40 ms against
# 10 ms for 10,000 Deployments; tests/bench/bench_planner.py).


class Action(NamedTuple):
    kind: ActionKind
    namespace: str
    name: str  # the Deployment
    app: str
    color: str
    uid: str
    resource_version: str
    reason: Reason
    message: str  # one line, for humans: logs, Events, the plan table
    # ANNOTATE: annotations to set (a value) or remove (None). SCALE: annotations written
    # together with the scale-down (original-replicas).
    annotations: Mapping[str, str | None] = {}
    # Connections at decision time (None when unknown), for the log line and the Event.
    connections: float | None = None
    # CONSOLIDATE: the step, its pods and their deletion costs.
    step: PodStep | None = None
    # A Rollout color: `name` is its ReplicaSet; a scale-down or delete is its
    # scale-down-deadline set to now (in `annotations`), which Argo Rollouts acts on.
    workload: WorkloadKind = WorkloadKind.DEPLOYMENT
    rollout: str = ""  # the Rollout's name, for its Event
    rollout_uid: str = ""

    @property
    def disruptive(self) -> bool:
        return self.kind is not ActionKind.ANNOTATE


class ColorPlan(NamedTuple):
    namespace: str
    app: str
    color: str
    name: str
    state: State
    rule: str | None  # None: no rule matches, never touched
    replicas: int
    ready_replicas: int
    connections: Connections
    created_at: datetime
    retired_at: datetime | None
    drained_since: datetime | None
    # Why the color is in this state and what was decided about it, as data; in words (one
    # line) from `reporting.render_note(note, plan.now)`. Words already, when read back from a
    # /status document.
    note: Note | str
    actions: tuple[Action, ...] = ()
    # A scale-down or delete that was due but not planned (paused, or the disruption budget of
    # the cycle spent): the reason it was due. The note says what would have been done.
    held: Reason | None = None
    kind: WorkloadKind = WorkloadKind.DEPLOYMENT

    def retired_for(self, now: datetime) -> timedelta | None:
        return None if self.retired_at is None else now - self.retired_at


class AppPlan(NamedTuple):
    namespace: str
    app: str
    rule: str | None
    blocked: BlockReason | None
    message: str
    colors: tuple[ColorPlan, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    now: datetime
    apps: tuple[AppPlan, ...]
    dry_run: bool = False
    paused: bool = False
    # Problems found in the snapshot that did not stop planning (malformed annotations...).
    warnings: tuple[str, ...] = ()

    @property
    def actions(self) -> tuple[Action, ...]:
        return tuple(a for app in self.apps for c in app.colors for a in c.actions)
