"""Fault suite, bad input: the malformed-policy corpus as live ConfigMap edits, fuzzed rainbowd
annotations, and odd objects (no color label, empty or app-wide Service selectors, two apps with
the same color value). A bad value on one object affects that object only; nothing is deleted on
doubt; the last good policy keeps running.

The corpus's error messages are checked one by one in `tests/unit/test_policy.py`; one invalid
edit's Event and metric in `test_policy_reload.py`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    DRAINED_SINCE,
    HOLD_UNTIL,
    LIVE_AT,
    ORIGINAL_REPLICAS,
    PROTECT,
    RETIRED_AT,
)
from rainbowd.core.objects import format_time
from rainbowd.daemon import Daemon
from rainbowd.kube.clients import request_json, resource_path
from rainbowd.settings import PolicySource
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.faultkit import (
    Color,
    Pods,
    create_colors,
    gone_or_zero,
    hold_clients,
    old_colors_beside_live_ones,
    policy_file_settings,
    rules_policy,
)
from tests.e2e.faultlog import Witness
from tests.e2e.harness import (
    daemon_settings,
    deployment_path,
    eventually,
    fetch_json,
    get_deployment,
    metric_sum,
    our_events,
    point_service,
    put_configmap,
    running_daemon,
    scrape_metrics,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

CORPUS = sorted((Path(__file__).parents[1] / "unit" / "policies" / "invalid").glob("*.yaml"))
CONFIGMAP = "rainbowd-policy"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def cycles_later(daemon: Daemon, n: int) -> None:
    """Until `n` cycles more than had begun when asked have ended, the last one good: a cycle is
    counted when it begins, its report and metrics published when it ends."""
    start = daemon.cycles

    async def done() -> bool:
        report = daemon.last_cycle
        assert report is not None and report.ok, report and report.error
        return report.number >= start + n

    await eventually(done, what=f"{n} more good cycles")


async def test_the_malformed_policy_corpus_as_live_edits(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    pods: Pods,
    witness: Witness,
) -> None:
    app = "chat"
    old, live = Color(app, "a00000"), Color(app, "f00000")
    await create_colors(kube_api, namespace, [old])
    await create_colors(kube_api, namespace, [live])
    await point_service(kube_api, namespace, live.color)
    pods.start(old.name, old)
    await pods.wait_scraped(old, " == 0", what=f"{old.name} scraped")
    # The good policy keeps retired colors an hour: the drained old color must stay.
    patient = rules_policy(shared_prometheus.url, namespace, [app], min_retired_age="1h")
    await put_configmap(kube_api, namespace, CONFIGMAP, patient)
    settings = daemon_settings(
        cluster_full,
        namespace,
        policy=PolicySource(configmap_namespace=namespace, configmap_name=CONFIGMAP),
    )
    hands_off = witness.hands_off_from(old.name, "acted against the last good policy")
    async with running_daemon(settings) as daemon:
        assert daemon.http_url is not None
        url = daemon.http_url
        await cycles_later(daemon, 2)
        record = witness.injected(f"malformed policy edits x{len(CORPUS)}", (old.name,))
        for path in CORPUS:
            before = await scrape_metrics(url)
            await put_configmap(kube_api, namespace, CONFIGMAP, path.read_text())

            async def judged(before: Samples = before, name: str = path.name) -> bool:
                now = await scrape_metrics(url)
                applied = metric_sum(now, "rainbowd_policy_reloads_total", result="applied")
                if applied != metric_sum(before, "rainbowd_policy_reloads_total", result="applied"):
                    pytest.fail(f"{name} was applied as a valid policy")
                return metric_sum(now, "rainbowd_policy_reloads_total", result="invalid") > (
                    metric_sum(before, "rainbowd_policy_reloads_total", result="invalid")
                )

            await eventually(judged, what=f"{path.name} to be rejected")
        await cycles_later(daemon, 2)
        status = await fetch_json(url + "/status")
        assert status["policy"]["valid"] is False
        assert status["policy"]["policy"]["defaults"]["minRetiredAge"] == "1h"
        obj = await get_deployment(kube_api, namespace, old.name)
        assert obj is not None and obj["spec"]["replicas"] == 1

        # A good edit still applies, and acts.
        witness.end_hands_off(hands_off)
        witness.cleared(record)
        await put_configmap(
            kube_api,
            namespace,
            CONFIGMAP,
            rules_policy(shared_prometheus.url, namespace, [app]),
        )

        async def burned_down() -> bool:
            return await gone_or_zero(kube_api, namespace, old.name)

        await eventually(burned_down, what="the old color burned down under the good edit")
        witness.converged(record)
    witness.assert_no_wrongful()


# Values a hand, a script or a bad merge could leave on a rainbowd annotation.
NASTY = [
    "",
    " ",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-05:00",
    "2026-13-45T99:99:99Z",
    "2026-11-29T16:00:00",
    "1970-01-01T00:00:00Z",
    "now",
    "null",
    "-1",
    "0",
    "1e309",
    "NaN",
    "True",
    "TRUE",
    "yes",
    "false",
    "\u202e\u0000",
    "x" * 300,
]
KEYS = [RETIRED_AT, DRAINED_SINCE, LIVE_AT, ORIGINAL_REPLICAS, PROTECT]


def fuzzed_annotations(rng: random.Random) -> dict[str, str]:
    out = {}
    for key in rng.sample(KEYS, rng.randint(1, len(KEYS))):
        value = rng.choice(NASTY)
        if rng.random() < 0.3:
            value = "".join(chr(rng.randint(32, 0x2FF)) for _ in range(rng.randint(1, 40)))
        out[key] = value.replace("\u0000", "")
    return out


async def test_fuzzed_annotations_affect_only_their_deployment(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    pods: Pods,
    witness: Witness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed = int(os.environ.get("RAINBOWD_FAULT_SEED") or random.randrange(2**32))
    print(f"fault seed: RAINBOWD_FAULT_SEED={seed}")
    rng = random.Random(seed)
    fuzzed = [Color("fuzz", f"a0000{i}") for i in range(4)]
    annotations = {c.name: fuzzed_annotations(rng) for c in fuzzed}
    # The values that stopped every cycle once, always among them.
    annotations[fuzzed[0].name][RETIRED_AT] = "9999-12-31T23:59:59Z"
    annotations[fuzzed[1].name][RETIRED_AT] = "0001-01-01T00:00:00+05:00"
    annotations[fuzzed[2].name][DRAINED_SINCE] = "0001-01-01T00:00:00+05:00"
    # One that stays: rainbowd never rewrites a person's hold, so it is reported every cycle.
    annotations[fuzzed[3].name][HOLD_UNTIL] = "tomorrow"
    print(f"fuzzed annotations: {annotations}")
    clean = Color("clean", "a00000")
    lives = [Color("fuzz", "f00000"), Color("clean", "f00000")]
    await old_colors_beside_live_ones(
        kube_api, namespace, pods, [*fuzzed, clean], lives, annotations=annotations
    )
    policy = rules_policy(shared_prometheus.url, namespace, ["fuzz", "clean"])
    settings = policy_file_settings(cluster_full, namespace, pods.workdir, policy)
    # Each fuzzed color holds a client: with its annotations absent, nothing would touch it.
    async with contextlib.AsyncExitStack() as clients:
        await hold_clients(clients, witness, pods, fuzzed)
        record = witness.injected(
            f"fuzzed annotations x{sum(len(a) for a in annotations.values())}",
            tuple(c.name for c in [*fuzzed, clean]),
        )
        async with running_daemon(settings) as daemon:
            # The clean app next door is burned down as usual.
            async def clean_burned() -> bool:
                return await gone_or_zero(kube_api, namespace, clean.name)

            await eventually(clean_burned, what="the clean app's old color burned down")
            witness.converged(record)
            await cycles_later(daemon, 3)
            for color in fuzzed:
                obj = await get_deployment(kube_api, namespace, color.name)
                assert obj is not None and obj["spec"]["replicas"] == 1, color.name
            # Each bad value is reported on its Deployment as a Warning Event, once.
            reported = await our_events(kube_api, namespace, reason="AnnotationWarning")
            notes = Counter((e["regarding"]["name"], e["note"]) for e in reported)
            assert all(n == 1 for n in notes.values()), notes
            assert {e["type"] for e in reported} == {"Warning"}
            assert any(
                name == fuzzed[3].name and HOLD_UNTIL in note and "tomorrow" in note
                for name, note in notes
            ), notes
    # Each bad value is reported once, not every cycle.
    warned = Counter(
        r.rainbowd_fields["warning"]  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "plan warning"
    )
    assert any(HOLD_UNTIL in w and "tomorrow" in w for w in warned), warned
    assert all(n == 1 for n in warned.values()), warned
    witness.assert_no_wrongful()


async def test_odd_objects_affect_only_themselves(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    pods: Pods,
    witness: Witness,
) -> None:
    # chat: a plain app beside the odd objects, whose old color must still be burned down.
    chat_old, chat_live = Color("chat", "a00000"), Color("chat", "f00000")
    # wide: one Service selects every color of the app (app label only): all are live.
    wide_old, wide_new = Color("wide", "a00000"), Color("wide", "f00000")
    # x and y share the color value abcdef: live in y, retired and holding a client in x.
    x_shared, x_live = Color("x", "abcdef"), Color("x", "111111")
    y_old, y_shared = Color("y", "222222"), Color("y", "abcdef")
    olds = [chat_old, wide_old, x_shared, y_old]
    news = [chat_live, wide_new, x_live, y_shared]
    await create_colors(kube_api, namespace, olds)
    await create_colors(kube_api, namespace, news)
    for live in (chat_live, x_live, y_shared):
        await point_service(kube_api, namespace, live.color, app=live.app)
    services = resource_path("v1", "services", namespace=namespace)
    await request_json(
        kube_api,
        "POST",
        services,
        body={
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "wide"},
            "spec": {"selector": {"app": "wide"}, "ports": [{"port": 80}]},
        },
    )
    await request_json(
        kube_api,
        "POST",
        services,
        body={
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "headless-manual"},
            "spec": {"ports": [{"port": 80}]},
        },
    )
    # A Deployment of the chat app without a color label on its pods.
    no_color = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat-sidecar", "labels": {"app": "chat"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "chat", "tier": "sidecar"}},
            "template": {
                "metadata": {"labels": {"app": "chat", "tier": "sidecar"}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/side:1"}]},
            },
        },
    }
    await request_json(kube_api, "POST", deployment_path(namespace), body=no_color)
    for color in [*olds, wide_new]:
        pods.start(color.name, color)
    for color in [*olds, wide_new]:
        await pods.wait_scraped(color, " == 0", what=f"{color.name} scraped")

    policy_path = pods.workdir / "policy.yaml"
    policy_path.write_text(
        rules_policy(shared_prometheus.url, namespace, ["chat", "wide", "x", "y"])
    )
    settings = daemon_settings(cluster_full, namespace, policy=PolicySource(file=str(policy_path)))
    async with witness.holding_connection(pods.pods[x_shared.name], x_shared.name):
        await pods.wait_scraped(x_shared, " == 1", what="x's client scraped")
        records = {
            "no color": witness.injected("Deployment without the color label", ("chat-sidecar",)),
            "empty": witness.injected("Service with an empty selector", (chat_old.name,)),
            "wide": witness.injected(
                "Service selecting every color", (wide_old.name, wide_new.name)
            ),
            "shared": witness.injected(
                "two apps sharing a color value", (x_shared.name, y_shared.name, y_old.name)
            ),
        }
        async with running_daemon(settings) as daemon:

            async def burned(name: str) -> bool:
                return await gone_or_zero(kube_api, namespace, name)

            await eventually(lambda: burned(chat_old.name), what="chat's old color burned down")
            witness.converged(records["empty"])
            await eventually(lambda: burned(y_old.name), what="y's old color burned down")
            witness.converged(records["shared"])
            await cycles_later(daemon, 4)
            for name in ("chat-sidecar", wide_old.name, wide_new.name, x_shared.name):
                obj = await get_deployment(kube_api, namespace, name)
                assert obj is not None and obj["spec"]["replicas"] == 1, name
            witness.converged(records["no color"])
            witness.converged(records["wide"])
    witness.assert_no_wrongful()


async def test_hand_written_stamps_under_max_retired_age_stop_no_cycle(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    pods: Pods,
    witness: Witness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Colors retired "forever" by hand (9999-12-31), or by a date no UTC time holds, under a
    rule with maxRetiredAge, draining with a client each so the forecast runs for them, beside
    an app whose old color is drained: that color is scaled down within two cycles, and no
    cycle fails (once, every cycle failed in the forecast's deadline)."""
    caplog.set_level(logging.INFO)
    was_live = format_time(datetime.now(UTC) - timedelta(hours=2))
    retired = format_time(datetime.now(UTC) - timedelta(hours=1))
    hand_written = (
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-05:00",
        "9999-12-31T23:59:59.999999Z",
    )
    stamped = [Color("stamped", f"a0000{i}") for i in range(len(hand_written))]
    drained = Color("clean", "a00000")
    annotations = {
        color.name: {LIVE_AT: was_live, RETIRED_AT: stamp}
        for color, stamp in zip(stamped, hand_written, strict=True)
    }
    annotations[drained.name] = {LIVE_AT: was_live, RETIRED_AT: retired, DRAINED_SINCE: retired}
    lives = [Color("stamped", "f00000"), Color("clean", "f00000")]
    await old_colors_beside_live_ones(
        kube_api, namespace, pods, [*stamped, drained], lives, annotations=annotations
    )
    # keepScaledDown 1: the drained color is scaled down (not deleted at once).
    policy = rules_policy(
        shared_prometheus.url, namespace, ["stamped", "clean"], keep_scaled_down=1
    ).replace("    selector: app=stamped\n", "    selector: app=stamped\n    maxRetiredAge: 1h\n")
    assert "maxRetiredAge: 1h" in policy
    settings = policy_file_settings(cluster_full, namespace, pods.workdir, policy)
    async with contextlib.AsyncExitStack() as clients:
        # Each stamped color holds a client: draining, so the forecast has it to estimate; and
        # nothing may touch it (its stamp is never past, and never makes maxRetiredAge due).
        await hold_clients(clients, witness, pods, stamped)
        record = witness.injected(
            "hand-written stamps under maxRetiredAge", tuple(c.name for c in stamped)
        )
        async with running_daemon(settings) as daemon:
            assert daemon.http_url is not None

            async def burned() -> bool:
                return await gone_or_zero(kube_api, namespace, drained.name)

            await eventually(burned, what=f"{drained.name} scaled down")
            witness.converged(record)
            await cycles_later(daemon, 2)
            samples = await scrape_metrics(daemon.http_url)
            status = await fetch_json(daemon.http_url + "/status")
            for color in stamped:
                obj = await get_deployment(kube_api, namespace, color.name)
                assert obj is not None and obj["spec"]["replicas"] == 1, color.name
    assert metric_sum(samples, "rainbowd_reconciles_total", result="error") == 0
    assert metric_sum(samples, "rainbowd_reconciles_total", result="ok") >= 3
    assert not status.get("sideFailures", {}), status.get("sideFailures")
    # The cycle that scaled it: the first "cycle finished" logged after its scale was applied.
    records = [(r.getMessage(), getattr(r, "rainbowd_fields", {})) for r in caplog.records]
    applied = next(
        i
        for i, (message, fields) in enumerate(records)
        if message == "action applied"
        and fields.get("deployment") == drained.name
        and fields.get("action") == "scale"
    )
    cycle = next(f["cycle"] for m, f in records[applied:] if m == "cycle finished")
    assert cycle <= 2, f"{drained.name} scaled down in cycle {cycle}"
    witness.assert_no_wrongful()
