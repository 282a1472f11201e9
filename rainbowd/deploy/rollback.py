"""`rainbowd rollback`: the Service switched back to the previous color (or `--to` one), which is
held and scaled back up first when rainbowd scaled it down, its autoscalers given back what
rainbowd changed (HPA bounds, a KEDA pause); during a canary, the Service narrowed
to the old color. The color rolled away from is left to the policy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    CONSOLIDATED_FROM,
    DRAINED_SINCE,
    HOLD_REASON,
    HOLD_UNTIL,
    ORIGINAL_REPLICAS,
    RETIREMENT,
    Deployment,
)
from rainbowd.core.objects import format_time
from rainbowd.deploy.common import (
    CANARY_COLOR,
    PREVIOUS_COLOR,
    AppRef,
    Color,
    DeployError,
    Say,
    ServiceSwitch,
    app_colors,
    app_service,
    deployments_path,
    patch_annotations,
    quiet,
    rainbow_service,
    record,
    stamp_was_live,
    switch_service,
    validate_color,
)
from rainbowd.deploy.waiting import Check, ready_color, wait_available
from rainbowd.kube.autoscaling import restore
from rainbowd.kube.clients import MERGE_PATCH, Conflict, KubeError, request_json

ROLLBACK_HOLD_MARGIN = timedelta(minutes=5)
"""A rollback holds its target for its timeout plus this: if the command dies, it lapses."""
_HOLD = (HOLD_UNTIL, HOLD_REASON)


def _describe(color: str, deployment: Deployment) -> str:
    if deployment.replicas == 0:
        restore = deployment.annotations.get(ORIGINAL_REPLICAS)
        state = "scaled to 0" + (f", restores {restore}" if restore else "")
    else:
        state = f"{deployment.ready_replicas}/{deployment.replicas} ready"
    return f"#{color} ({state})"


def _target(
    ref: AppRef,
    colors: Mapping[str, Color],
    *,
    wanted: str | None,
    live: str | None,
    away: str | None,
) -> tuple[str, Color]:
    """The color to roll back to, or why there is none, naming the colors there are."""
    others = ", ".join(_describe(c, d.deployment) for c, d in colors.items() if c != away) or "none"
    if wanted is None:
        raise DeployError(
            f"Service {ref.service_name} records no previous color ({PREVIOUS_COLOR}): pass "
            f"--to COLOR; colors that can be rolled back to: {others}"
        )
    if wanted == live:
        raise DeployError(f"#{wanted} is already live on Service {ref.service_name}")
    found = colors.get(wanted)
    if found is None:
        raise DeployError(
            f"cannot roll back to #{wanted}: no Deployment of {ref.app} has that color in "
            f"namespace {ref.namespace} (deleted?); colors that can be rolled back to: {others}"
        )
    return wanted, found


async def rollback(
    api: ApiClient,
    ref: AppRef,
    *,
    to: str | None = None,
    within: float = 600.0,
    check: Check | None = None,
    say: Say = quiet,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ServiceSwitch:
    """Switches the Service back to `to` (default: the previous color recorded on it), scaling
    it up first to its original replicas when rainbowd scaled it to 0; during a canary, narrows
    the Service to the old color. The color rolled away from is left to the policy."""
    service = await app_service(api, ref)
    if service is None:
        raise DeployError(f"no Service {ref.namespace}/{ref.service_name}: nothing to roll back")
    colors = await app_colors(api, ref)
    live, canary = rainbow_service(service, colors, ref)
    away = live or canary  # None: the Service selects no color of the app
    wanted = validate_color(to) if to is not None else service.annotations.get(PREVIOUS_COLOR)
    target, found = _target(ref, colors, wanted=wanted, live=live, away=away)
    name = found.name
    held = await _hold_for_rollback(api, ref, found.deployment, within=within, say=say, now=now)
    try:
        # Before the switch: the HPA's bounds and KEDA's scaling back as they were, so the
        # color's autoscaler does not undo the replicas it just got back.
        for line in await restore(api, ref.namespace, name):
            say(line)
        found = await wait_available(api, ref.namespace, name, within=within, say=say)
        if check is not None:
            await check(await ready_color(api, found, ref, away))
        await switch_service(
            api,
            ref,
            service,
            selector={ref.color_label: target},
            annotations={PREVIOUS_COLOR: away, CANARY_COLOR: None},
        )
    except (DeployError, KubeError) as exc:
        if held:
            await patch_annotations(api, ref.namespace, name, dict.fromkeys(_HOLD))
        raise DeployError(str(exc) if isinstance(exc, DeployError) else f"{name}: {exc}") from exc
    await _clear_retirement(api, ref, name, held=held, say=say)
    await stamp_was_live(api, ref, away, now=now(), say=say)
    was = f"the canary of #{canary}" if canary else f"#{live}" if live else "no color of it"
    message = f"Service {ref.service_name} now selects #{target} again (was {was})" + (
        f"; #{away} is retired and follows the policy" if away else ""
    )
    say(message)
    await record(api, found.deployment, reason="RolledBack", note=message, action="Rollback")
    return ServiceSwitch(target, away, True, message, name)


async def _clear_retirement(
    api: ApiClient, ref: AppRef, name: str, *, held: bool, say: Say
) -> None:
    """Live again: its retired bookkeeping goes (the daemon would clear it at its next cycle
    too), and this rollback's hold with it."""
    clear: dict[str, str | None] = dict.fromkeys(RETIREMENT)
    if held:
        clear.update(dict.fromkeys(_HOLD))
    try:
        await patch_annotations(api, ref.namespace, name, clear)
    except KubeError as exc:
        # The switch is done, so the rollback happened; what is left is rainbowd's or lapses.
        say(
            f"warning: {name}: its retired bookkeeping"
            + (" and this rollback's hold" if held else "")
            + f" not removed ({exc}); rainbowd clears a live color's bookkeeping at its next "
            "cycle" + (", and the hold lapses by itself" if held else "")
        )


async def _hold_for_rollback(
    api: ApiClient,
    ref: AppRef,
    deployment: Deployment,
    *,
    within: float,
    say: Say,
    now: Callable[[], datetime],
) -> bool:
    """Holds the rollback's target (and scales it back up if it is at 0) in one write, so the
    daemon cannot scale it down between now and the switch. True when the hold is ours."""
    name = deployment.name
    annotations = deployment.annotations
    patch: dict[str, Any] = {"metadata": {"annotations": {}}}
    ours = HOLD_UNTIL not in annotations
    if ours:
        until = now() + timedelta(seconds=within) + ROLLBACK_HOLD_MARGIN
        patch["metadata"]["annotations"] = {
            HOLD_UNTIL: format_time(until),
            HOLD_REASON: "rollback in progress",
        }
    current = deployment.replicas
    restore, record_key = replicas_before_rainbowd(annotations)
    if current == 0 and restore < 1:
        raise DeployError(
            f"{name} is scaled to 0 and its {ORIGINAL_REPLICAS} annotation is "
            f"{annotations.get(ORIGINAL_REPLICAS)!r}: scale it up by hand (kubectl scale "
            f"deployment/{name} --replicas=N), then roll back"
        )
    if restore > current:
        # Scaled to 0, or consolidated to fewer pods while it drained: the live color gets
        # back the replicas it had before rainbowd touched it.
        patch["spec"] = {"replicas": restore}
        # A scale-up starts a new drain: an old drained-since must not count.
        patch["metadata"]["annotations"][DRAINED_SINCE] = None
        say(f"scaling {name} from {current} back to {restore} replicas ({record_key})")
    if not patch["metadata"]["annotations"] and "spec" not in patch:
        return False
    patch["metadata"]["resourceVersion"] = deployment.resource_version
    try:
        await request_json(
            api,
            "PATCH",
            deployments_path(ref.namespace, name),
            body=patch,
            content_type=MERGE_PATCH,
        )
    except Conflict:
        raise DeployError(
            f"{name} changed while the rollback read it (rainbowd acting on it?); nothing was "
            "switched: run the rollback again"
        ) from None
    return ours


def replicas_before_rainbowd(annotations: Mapping[str, str]) -> tuple[int, str]:
    """The most replicas rainbowd's records say the color had before it scaled the color to 0
    (original-replicas) or consolidated it (consolidated-from), and the record saying so; 0 when
    neither record is a count."""
    best, record_key = 0, ORIGINAL_REPLICAS
    for key in (ORIGINAL_REPLICAS, CONSOLIDATED_FROM):
        try:
            count = int(annotations.get(key) or 0)
        except ValueError:  # a hand-edited record: not a count
            count = 0
        if count > best:
            best, record_key = count, key
    return best, record_key
