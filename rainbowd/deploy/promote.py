"""`rainbowd promote`: a canary ended, the Service narrowed to the canary color; the color it ran
beside is retired and follows the policy."""

from __future__ import annotations

from datetime import UTC, datetime

from kubernetes_asyncio.client import ApiClient

from rainbowd.deploy.common import (
    CANARY_COLOR,
    PREVIOUS_COLOR,
    AppRef,
    DeployError,
    Say,
    ServiceSwitch,
    app_colors,
    app_service,
    quiet,
    rainbow_service,
    record,
    stamp_was_live,
    switch_service,
)


async def promote(api: ApiClient, ref: AppRef, *, say: Say = quiet) -> ServiceSwitch:
    """Ends a canary: the Service narrowed to the canary color; the old color becomes retired."""
    service = await app_service(api, ref)
    if service is None:
        raise DeployError(f"no Service {ref.namespace}/{ref.service_name}")
    colors = await app_colors(api, ref)
    live, canary = rainbow_service(service, colors, ref)
    if canary is None:
        raise DeployError(
            f"no canary in progress on Service {ref.service_name}: it selects #{live} only"
        )
    found = colors.get(canary)
    if found is None or not found.deployment.rolled_out:
        raise DeployError(
            f"the canary #{canary} is not Available (or was deleted): not promoted; "
            f"`rainbowd rollback --app {ref.app}` ends the canary on the old color"
        )
    previous = service.annotations.get(PREVIOUS_COLOR)
    await switch_service(
        api,
        ref,
        service,
        selector={ref.color_label: canary},
        annotations={CANARY_COLOR: None},
    )
    await stamp_was_live(api, ref, previous, now=datetime.now(UTC), say=say)
    message = f"promoted: Service {ref.service_name} now selects #{canary} only" + (
        f"; #{previous} is retired and follows the policy" if previous else ""
    )
    say(message)
    await record(api, found.deployment, reason="Promoted", note=message, action="Promote")
    return ServiceSwitch(canary, previous, True, message, found.name)
